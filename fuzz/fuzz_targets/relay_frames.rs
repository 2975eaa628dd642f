#![no_main]
//! cargo-fuzz target: the relay's frames as the daemon and the Worker read them (one binary
//! WebSocket message each), the Worker's splice decisions on them, the phone's first
//! end-to-end handshake message as the daemon answers it, and pair links from a QR code.
use loopsy_relay::{e2e, frame::Frame, link::PairLink, splice};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = Frame::decode(data);
    let _ = splice::on_device_binary(data, |c| c % 2 == 0);
    if let Some((&ch, rest)) = data.split_first() {
        let _ = splice::on_phone_binary(u32::from(ch), rest.to_vec(), true);
    }
    if let Ok(key) = e2e::KeyPair::from_secret(&[7; 32]) {
        let _ = e2e::respond(&key, &e2e::prologue("d", "p"), data);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = PairLink::parse(text);
        let _ = loopsy_relay::negotiate(text);
        let _ = loopsy_relay::token::peek(text);
        let _ = loopsy_relay::token::verify(&[1; 32], text, "d", 0);
        if let Some((path, query)) = text.split_once('?') {
            let _ = loopsy_relay::route::route("GET", path, Some(query));
        } else {
            let _ = loopsy_relay::route::route("POST", text, None);
        }
    }
});
