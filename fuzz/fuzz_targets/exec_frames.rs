#![no_main]
//! cargo-fuzz target: loopsy_mesh::fuzzing::exec_frames (the exec pipe's frames).
libfuzzer_sys::fuzz_target!(|data: &[u8]| loopsy_mesh::fuzzing::exec_frames(data));
