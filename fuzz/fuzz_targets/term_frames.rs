#![no_main]
//! cargo-fuzz target: the session host protocol (`loopsy-term`) as the daemon and the host
//! read it from each other: frame heads, the requests and replies they carry as JSON, and
//! the resize and skip payloads.
use loopsy_term::proto::{self, Reply, Request};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(head) = data.get(..5)
        && let Ok(head) = <[u8; 5]>::try_from(head)
        && let Ok((_, len)) = proto::decode_head(head)
    {
        let body = &data[5..];
        let body = &body[..body.len().min(len as usize)];
        let _ = serde_json::from_slice::<Request>(body);
        let _ = serde_json::from_slice::<Reply>(body);
        let _ = proto::decode_resize(body);
        let _ = proto::decode_skip(body);
    }
});
