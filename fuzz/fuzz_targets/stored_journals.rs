#![no_main]
//! cargo-fuzz target: loopsy_mesh::fuzzing::stored_journals.
libfuzzer_sys::fuzz_target!(|data: &[u8]| loopsy_mesh::fuzzing::stored_journals(data));
