//! Control frame decoder and round trip, then the protocol state machine on the same bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dms_core::fuzzing::exercise_control_frame(data));
