//! A registration value as read from etcd (untrusted): decode, round trip, its fields parsed.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dms_fuzz::exercise_discovery_value(data));
