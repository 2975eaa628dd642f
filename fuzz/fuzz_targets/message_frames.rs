#![no_main]
//! cargo-fuzz target: loopsy_mesh::fuzzing::message_frames.
libfuzzer_sys::fuzz_target!(|data: &[u8]| loopsy_mesh::fuzzing::message_frames(data));
