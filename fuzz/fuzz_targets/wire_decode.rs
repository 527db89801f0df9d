//! Frame and message decoder on arbitrary bytes, in arbitrary chunks, with tight limits.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dms_core::fuzzing::exercise_wire_decode(data));
