#![no_main]
//! cargo-fuzz target: loopsy_mesh::fuzzing::file_header.
libfuzzer_sys::fuzz_target!(|data: &[u8]| loopsy_mesh::fuzzing::file_header(data));
