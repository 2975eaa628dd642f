//! TCP keepalive (time and interval; Windows has no user timeout to set).

use std::io;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

pub(crate) fn watch_path(
    sock: &SockRef<'_>,
    idle: Duration,
    interval: Duration,
    _user_timeout: Duration,
) -> io::Result<()> {
    sock.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle).with_interval(interval))
}
