//! Greeting and NULL handshake on arbitrary bytes, then the message decoder.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dms_core::fuzzing::exercise_handshake(data));
