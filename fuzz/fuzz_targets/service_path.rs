//! Service and cluster paths, ACL patterns and policies, endpoints: parse, print, parse.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dms_core::fuzzing::exercise_service_path(data));
