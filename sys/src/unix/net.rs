//! TCP keepalive with probe counts; the user timeout where the kernel has one.

use std::io;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

pub(crate) fn watch_path(
    sock: &SockRef<'_>,
    idle: Duration,
    interval: Duration,
    user_timeout: Duration,
) -> io::Result<()> {
    let ka = TcpKeepalive::new()
        .with_time(idle)
        .with_interval(interval)
        .with_retries(3);
    sock.set_tcp_keepalive(&ka)?;
    crate::os::set_user_timeout(sock, user_timeout)
}
