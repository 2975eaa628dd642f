//! Long-lived TCP links (the phone relay's WebSocket): let the kernel watch the path, so a
//! dead link is noticed without the process waking up to ask.

use std::time::Duration;

/// Keepalive probes after `idle` without traffic, every `interval`, and (where the platform
/// has it: Linux's `TCP_USER_TIMEOUT`) an abort when sent data stays unacknowledged for
/// `user_timeout`. Errors are returned for the caller to log; the link works without them.
pub fn watch_path(
    tcp: &tokio::net::TcpStream,
    idle: Duration,
    interval: Duration,
    user_timeout: Duration,
) -> std::io::Result<()> {
    crate::imp::net::watch_path(&socket2::SockRef::from(tcp), idle, interval, user_timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_loopback_link_can_be_watched() -> std::io::Result<()> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let c = tokio::net::TcpStream::connect(l.local_addr()?).await?;
        watch_path(
            &c,
            Duration::from_secs(30),
            Duration::from_secs(10),
            Duration::from_secs(60),
        )?;
        assert!(socket2::SockRef::from(&c).keepalive()?);
        Ok(())
    }
}
