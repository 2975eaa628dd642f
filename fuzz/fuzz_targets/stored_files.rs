#![no_main]
//! cargo-fuzz target: loopsy_mesh::fuzzing::stored_files.
libfuzzer_sys::fuzz_target!(|data: &[u8]| loopsy_mesh::fuzzing::stored_files(data));
