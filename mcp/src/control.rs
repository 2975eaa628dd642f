//! The control socket's first line: which channel a connection wants, and version checks.
//!
//! A client writes `LOOPSY/<protocol> <verb>\n`; the daemon answers
//! `OK <app-version> <pid>\n` or `ERR <code> <message>\n`. After `OK` to `mcp` the connection
//! speaks MCP (newline-delimited JSON-RPC). Raw terminal attach will get its own verb.

use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

/// Version of this line protocol; bumped on incompatible change.
pub const PROTOCOL: u32 = 1;
/// Longest hello or reply line.
pub const MAX_LINE: usize = 512;
/// How long a peer may take to send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// What a connection asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Speak MCP from here on (the agent tools).
    Mcp,
    /// Speak MCP with the admin tools too (pairing, trust): the CLI's session.
    Admin,
    /// Answer `OK` and close: the liveness and version probe.
    Ping,
    /// Shut the daemon down cleanly.
    Shutdown,
    /// Re-read `api.token` after a rotation.
    ReloadKey,
    /// Splice to a session on a peer: one JSON line `{"peer", "session"}`, then the session
    /// host protocol both ways.
    Attach,
    /// Run a command as a pipe: one JSON line `{"peer"}`, then the exec frames both ways
    /// (`loopsy_mesh::exec::wire`).
    Exec,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Mcp => "mcp",
            Verb::Admin => "admin",
            Verb::Ping => "ping",
            Verb::Shutdown => "shutdown",
            Verb::ReloadKey => "reload-key",
            Verb::Attach => "attach",
            Verb::Exec => "exec",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "mcp" => Verb::Mcp,
            "admin" => Verb::Admin,
            "ping" => Verb::Ping,
            "shutdown" => Verb::Shutdown,
            "reload-key" => Verb::ReloadKey,
            "attach" => Verb::Attach,
            "exec" => Verb::Exec,
            _ => return None,
        })
    }
}

/// The daemon's answer to a hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The daemon's app version.
    pub version: String,
    /// The daemon's pid.
    pub pid: u32,
}

/// Why a hello failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The daemon answered `ERR`.
    #[error("the daemon refused: {code}: {message}")]
    Refused {
        /// Stable code.
        code: String,
        /// Explanation.
        message: String,
    },
    /// Not our protocol, or cut short.
    #[error("unexpected answer on the control socket: {0:?}")]
    Garbled(String),
    /// Too slow.
    #[error("no answer on the control socket within {0:?}")]
    Timeout(Duration),
    /// The OS said no.
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
}

/// The hello line a client sends.
pub fn hello_line(verb: Verb) -> String {
    format!("LOOPSY/{PROTOCOL} {}\n", verb.as_str())
}

/// Read one line of at most [`MAX_LINE`] bytes (without the newline), within `timeout`.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    timeout: Duration,
) -> Result<String, ControlError> {
    let mut buf = Vec::with_capacity(64);
    let fut = async {
        loop {
            let avail = r.fill_buf().await?;
            if avail.is_empty() {
                return Err(ControlError::Garbled(String::from_utf8_lossy(&buf).into()));
            }
            if let Some(i) = avail.iter().position(|&b| b == b'\n') {
                buf.extend_from_slice(&avail[..i]);
                r.consume(i + 1);
                return Ok(());
            }
            let n = avail.len();
            buf.extend_from_slice(avail);
            r.consume(n);
            if buf.len() > MAX_LINE {
                return Err(ControlError::Garbled("line too long".into()));
            }
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r?,
        Err(_) => return Err(ControlError::Timeout(timeout)),
    }
    if buf.len() > MAX_LINE {
        return Err(ControlError::Garbled("line too long".into()));
    }
    String::from_utf8(buf).map_err(|e| ControlError::Garbled(e.to_string()))
}

/// The one JSON line a verb's client sends after the welcome (`attach`, `exec`): `None` when it
/// is late, too long or not that shape.
pub async fn read_request<R, T>(r: &mut R) -> Option<T>
where
    R: AsyncBufRead + Unpin,
    T: serde::de::DeserializeOwned,
{
    let line = read_line(r, Duration::from_secs(10)).await.ok()?;
    serde_json::from_str(&line).ok()
}

/// Client side: send the hello for `verb` and read the daemon's welcome.
pub async fn handshake<R, W>(r: &mut R, w: &mut W, verb: Verb) -> Result<Welcome, ControlError>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    w.write_all(hello_line(verb).as_bytes()).await?;
    w.flush().await?;
    parse_welcome(&read_line(r, HELLO_TIMEOUT).await?)
}

/// Parse `OK <version> <pid>` / `ERR <code> <message>`.
pub fn parse_welcome(line: &str) -> Result<Welcome, ControlError> {
    let mut parts = line.splitn(3, ' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("OK"), Some(version), Some(pid)) => Ok(Welcome {
            version: version.to_string(),
            pid: pid
                .parse()
                .map_err(|_| ControlError::Garbled(line.into()))?,
        }),
        (Some("ERR"), Some(code), message) => Err(ControlError::Refused {
            code: code.to_string(),
            message: message.unwrap_or_default().to_string(),
        }),
        _ => Err(ControlError::Garbled(line.into())),
    }
}

/// Server side: parse a hello line into a verb, or the `ERR` line to send back.
pub fn parse_hello(line: &str) -> Result<Verb, String> {
    let Some((proto, verb)) = line.split_once(' ') else {
        return Err("ERR bad-hello expected \"LOOPSY/<n> <verb>\"\n".into());
    };
    let Some(n) = proto
        .strip_prefix("LOOPSY/")
        .and_then(|n| n.parse::<u32>().ok())
    else {
        return Err("ERR bad-hello expected \"LOOPSY/<n> <verb>\"\n".into());
    };
    if n != PROTOCOL {
        return Err(format!(
            "ERR unsupported-protocol this daemon speaks control protocol {PROTOCOL}, the client {n}: run `loopsy restart` after upgrading\n"
        ));
    }
    Verb::parse(verb).ok_or_else(|| format!("ERR unknown-verb {verb:?}\n"))
}

/// The `OK` line the daemon sends.
pub fn ok_line() -> String {
    format!("OK {} {}\n", loopsy_mesh::VERSION, std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_roundtrip_and_refusals() {
        for v in [
            Verb::Mcp,
            Verb::Admin,
            Verb::Ping,
            Verb::Shutdown,
            Verb::ReloadKey,
            Verb::Attach,
            Verb::Exec,
        ] {
            let line = hello_line(v);
            assert_eq!(parse_hello(line.trim_end()), Ok(v));
        }
        assert!(parse_hello("GET / HTTP/1.1").is_err());
        assert!(parse_hello("LOOPSY/2 mcp").is_err_and(|e| e.contains("unsupported-protocol")));
        assert!(parse_hello("LOOPSY/1 dance").is_err_and(|e| e.contains("unknown-verb")));
        let w = parse_welcome(ok_line().trim_end());
        assert!(matches!(w, Ok(Welcome { pid, .. }) if pid == std::process::id()));
        assert!(matches!(
            parse_welcome("ERR unsupported-protocol nope"),
            Err(ControlError::Refused { code, .. }) if code == "unsupported-protocol"
        ));
        assert!(matches!(
            parse_welcome("HTTP/1.1 200"),
            Err(ControlError::Garbled(_))
        ));
    }

    #[tokio::test]
    async fn read_line_caps_length_and_time() {
        let long = vec![b'a'; MAX_LINE * 4];
        let mut r = tokio::io::BufReader::new(&long[..]);
        assert!(matches!(
            read_line(&mut r, HELLO_TIMEOUT).await,
            Err(ControlError::Garbled(_))
        ));
        let (_w, rd) = tokio::io::duplex(64);
        let mut r = tokio::io::BufReader::new(rd);
        let t = Duration::from_millis(20);
        assert!(matches!(
            read_line(&mut r, t).await,
            Err(ControlError::Timeout(_))
        ));
        let mut r = tokio::io::BufReader::new(&b"LOOPSY/1 mcp\n{\"x\":1}"[..]);
        assert_eq!(
            read_line(&mut r, t).await.ok().as_deref(),
            Some("LOOPSY/1 mcp")
        );
    }
}
