//! A hostile relay for tests (issue #24): a proxy in front of the real Worker (under
//! `wrangler dev`) that the laptop is configured with. It answers every `DELETE` itself with a
//! success and never forwards it (so the relay keeps a phone the laptop revoked), records the
//! frames the relay sends down the laptop's WebSocket, and can inject frames of its own (new
//! ones, or recorded ones replayed) into that WebSocket. Everything else passes through.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

/// What the proxy did and can do, shared with the test.
#[derive(Default)]
pub struct ProxyState {
    /// `DELETE`s answered with a fake success and not forwarded.
    pub swallowed: AtomicU64,
    /// Binary messages the relay sent down the laptop's WebSocket, in order.
    pub to_laptop: Mutex<Vec<Vec<u8>>>,
    /// Sends into the laptop's current WebSocket, as if from the relay.
    inject: Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>,
}

impl ProxyState {
    /// Send `bytes` down the laptop's WebSocket as a binary message from the relay.
    pub fn inject(&self, bytes: Vec<u8>) {
        let tx = self.inject.lock().unwrap();
        tx.as_ref()
            .expect("the laptop is not connected through the proxy")
            .send(bytes)
            .expect("the laptop's WebSocket is gone");
    }

    /// What the relay has sent to the laptop so far.
    pub fn recorded(&self) -> Vec<Vec<u8>> {
        self.to_laptop.lock().unwrap().clone()
    }
}

pub struct HostileProxy {
    pub port: u16,
    pub state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

impl HostileProxy {
    /// Listen on loopback in front of the Worker at `127.0.0.1:upstream`. Call inside a
    /// runtime that outlives the test's use of it.
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(ProxyState::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = serve(tcp, upstream, st).await;
                });
            }
        });
        Self { port, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for HostileProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The request head at the front of `tcp`, without consuming it (up to 16 KiB).
async fn peek_head(tcp: &TcpStream) -> std::io::Result<String> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(end) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(String::from_utf8_lossy(&buf[..end]).into_owned());
        }
        if n == buf.len() {
            return Err(std::io::Error::other("request head too large"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

async fn serve(mut tcp: TcpStream, upstream: u16, st: Arc<ProxyState>) -> std::io::Result<()> {
    loop {
        let head = peek_head(&tcp).await?;
        let mut parts = head.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let upgrade = header(&head, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        if upgrade && path.starts_with("/v1/device/") && !path.contains("/phones/") {
            return laptop_socket(tcp, upstream, path.to_string(), st).await;
        }
        if method == "DELETE" {
            // Consume the request, answer it as if the relay had done it, keep the connection.
            let body = header(&head, "content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            let mut skip = vec![0u8; head.len() + 4 + body];
            tcp.read_exact(&mut skip).await?;
            st.swallowed.fetch_add(1, Ordering::SeqCst);
            tcp.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}",
            )
            .await?;
            continue;
        }
        // Anything else: a plain pipe to the Worker (with connection: close from the client
        // side of a plain request, the next request comes on a new connection and is looked
        // at again).
        let mut up = TcpStream::connect(("127.0.0.1", upstream)).await?;
        if upgrade {
            tokio::io::copy_bidirectional(&mut tcp, &mut up).await?;
            return Ok(());
        }
        let body = header(&head, "content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut req = vec![0u8; head.len() + 4 + body];
        tcp.read_exact(&mut req).await?;
        // Ask the Worker to close after its answer, so its end marks the answer's end.
        let text = String::from_utf8_lossy(&req[..head.len()]).into_owned();
        let mut out: Vec<u8> = text
            .lines()
            .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
            .flat_map(|l| format!("{l}\r\n").into_bytes())
            .collect();
        out.extend_from_slice(b"connection: close\r\n\r\n");
        out.extend_from_slice(&req[head.len() + 4..]);
        up.write_all(&out).await?;
        let mut answer = Vec::new();
        up.read_to_end(&mut answer).await?;
        tcp.write_all(&answer).await?;
    }
}

/// The laptop's WebSocket: accepted here, opened again to the Worker with the same path and
/// offer, and pumped both ways, with the relay's messages recorded and injections mixed in.
async fn laptop_socket(
    tcp: TcpStream,
    upstream: u16,
    path: String,
    st: Arc<ProxyState>,
) -> std::io::Result<()> {
    let offer = Arc::new(Mutex::new(None::<String>));
    let seen = offer.clone();
    #[allow(clippy::result_large_err)] // the callback's type is tungstenite's
    let callback = move |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        let protos = req
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        *seen.lock().unwrap() = Some(protos);
        resp.headers_mut()
            .insert("Sec-WebSocket-Protocol", "loopsy.v1".parse().unwrap());
        Ok(resp)
    };
    let laptop = tokio_tungstenite::accept_hdr_async(tcp, callback)
        .await
        .map_err(std::io::Error::other)?;
    let protos = offer.lock().unwrap().clone().unwrap_or_default();
    let mut req = format!("ws://127.0.0.1:{upstream}{path}")
        .into_client_request()
        .map_err(std::io::Error::other)?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        protos.parse().map_err(std::io::Error::other)?,
    );
    let (relay, _) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(std::io::Error::other)?;
    let (tx, mut injected) = mpsc::unbounded_channel();
    *st.inject.lock().unwrap() = Some(tx);
    let (mut to_laptop, mut from_laptop) = laptop.split();
    let (mut to_relay, mut from_relay) = relay.split();
    loop {
        tokio::select! {
            m = from_relay.next() => match m {
                Some(Ok(m)) => {
                    if let Message::Binary(b) = &m {
                        st.to_laptop.lock().unwrap().push(b.to_vec());
                    }
                    if to_laptop.send(m).await.is_err() { break; }
                }
                _ => break,
            },
            m = from_laptop.next() => match m {
                Some(Ok(m)) => if to_relay.send(m).await.is_err() { break; },
                _ => break,
            },
            Some(b) = injected.recv() => {
                if to_laptop.send(Message::Binary(b.into())).await.is_err() { break; }
            }
        }
    }
    Ok(())
}
