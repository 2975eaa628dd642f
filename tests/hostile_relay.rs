//! A hostile relay (issue #22): a WebSocket server posing as the laptop's relay opens far
//! more phone channels than any relay should. The daemon closes the ones past its limit,
//! says so, and stays up.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::time::Duration;

use std::os::unix::fs::PermissionsExt;

use base64::Engine;
use common::TestHome;
use futures::{SinkExt, StreamExt};
use loopsy_relay::frame::{Frame, FrameKind};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_opening_too_many_channels_gets_them_closed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let h = TestHome::new();
    h.ok(&["init", "--name", "lap"]);
    let creds = serde_json::json!({
        "url": format!("http://127.0.0.1:{port}"),
        "device_id": loopsy_relay::secret::id_from(&[1; 16]),
        "device_secret": loopsy_relay::secret::secret_from(&[2; loopsy_relay::secret::SECRET_BYTES]),
        "e2e_secret": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([3u8; 32]),
    });
    let path = h.path().join("relay.json");
    std::fs::write(&path, creds.to_string()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    h.start();
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(20), listener.accept())
        .await
        .expect("the daemon never connected to its relay")
        .unwrap();
    #[allow(clippy::result_large_err)] // the callback's type is tungstenite's
    fn offer(_: &Request, mut r: Response) -> Result<Response, ErrorResponse> {
        r.headers_mut()
            .insert("Sec-WebSocket-Protocol", "loopsy.v1".parse().unwrap());
        Ok(r)
    }
    let mut ws = tokio_tungstenite::accept_hdr_async(tcp, offer)
        .await
        .unwrap();
    let phone = loopsy_relay::secret::id_from(&[9; 16]);
    let max = 64u32;
    for ch in 1..=max + 36 {
        let f = Frame::new(FrameKind::Open, ch, phone.clone().into_bytes());
        ws.send(Message::Binary(f.encode().unwrap().into()))
            .await
            .unwrap();
    }
    let mut closed = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while closed.len() < 36 {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("only {} channels closed", closed.len()));
        if let Some(Ok(Message::Binary(b))) = m {
            let f = Frame::decode(&b).unwrap();
            if f.kind == FrameKind::Close && f.payload == b"too many channels" {
                closed.insert(f.channel);
            }
        }
    }
    assert!(closed.iter().all(|c| *c > max), "{closed:?}");
    assert!(h.running());
    let st = h.status();
    assert!(
        st["relay"]["phones_connected"].as_u64().unwrap_or(0) <= u64::from(max),
        "{st}"
    );
}
