//! `loopsy mcp`: the stdio MCP server an agent launches. A byte-for-byte bridge to the
//! daemon's control socket (starting the daemon if needed), so every agent talks to the one
//! daemon and the bridge adds only a copy.

use std::io::{Read, Write};

use loopsy_mcp::control::Verb;
use loopsy_mesh::Home;

use crate::lifecycle::{self, ProbeError};

/// Buffer size for each direction.
const BUF: usize = 64 * 1024;

/// Bridge stdin/stdout to the daemon until either side closes.
pub fn run(home: &Home) -> anyhow::Result<()> {
    let (mut from_daemon, to_daemon, welcome) = match lifecycle::hello(home, Verb::Mcp) {
        Ok(c) => c,
        Err(ProbeError::NotRunning) => {
            lifecycle::ensure_running(home)?;
            lifecycle::hello(home, Verb::Mcp)?
        }
        Err(e) => return Err(e.into()),
    };
    if welcome.version != loopsy_mesh::VERSION {
        eprintln!(
            "loopsy mcp: the daemon is version {}, this binary {}; run `loopsy restart`",
            welcome.version,
            loopsy_mesh::VERSION
        );
    }

    // stdin -> daemon on a thread; daemon -> stdout here.
    let mut to_daemon_w = to_daemon;
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; BUF];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_daemon_w.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        // EOF from the agent: let the daemon finish and close its side. Where the stream
        // cannot half-close (Windows pipes), the agent is gone and so is the bridge.
        if to_daemon_w.shutdown_write().is_err() {
            std::process::exit(0);
        }
    });

    let mut stdout = std::io::stdout().lock();
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match from_daemon.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if stdout
            .write_all(&buf[..n])
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break; // the agent went away
        }
    }
    Ok(())
}
