#![no_main]
//! cargo-fuzz target: the local control socket's first lines, as the daemon reads a client's
//! hello and a client reads the daemon's welcome.
use loopsy_mcp::control;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(line) = std::str::from_utf8(data) {
        let _ = control::parse_hello(line);
        let _ = control::parse_welcome(line);
    }
});
