#![no_main]
//! cargo-fuzz target: loopsy_mesh::fuzzing::rpc_messages.
libfuzzer_sys::fuzz_target!(|data: &[u8]| loopsy_mesh::fuzzing::rpc_messages(data));
