#![no_main]
//! cargo-fuzz target: the phone app's decrypted messages as the daemon decodes them
//! (`app::Decoder`), fed in pieces: the first byte of each piece says how long it is, so
//! control messages split in parts are reassembled as they would be.
use loopsy_relay::app::Decoder;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut d = Decoder::default();
    let mut rest = data;
    while let Some((&n, tail)) = rest.split_first() {
        let n = usize::from(n).min(tail.len());
        let (piece, next) = tail.split_at(n);
        let _ = d.push(piece);
        rest = next;
    }
});
