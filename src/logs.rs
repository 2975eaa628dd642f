//! `loopsy logs`: the daemon's log or the audit log, optionally followed.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use anyhow::Context;
use loopsy_mesh::Home;

/// How often `-f` looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// How far back from the end we read to find the last lines.
const TAIL_WINDOW: u64 = 1 << 20;

/// `loopsy logs`
pub fn logs(home: &Home, audit: bool, lines: usize, follow: bool) -> anyhow::Result<()> {
    let path = if audit {
        home.audit_log()
    } else {
        home.daemon_log()
    };
    let mut f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !follow => {
            anstream::eprintln!("no log yet at {} (has the daemon run?)", path.display());
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    let len = f.metadata()?.len();
    let start = len.saturating_sub(TAIL_WINDOW);
    f.seek(SeekFrom::Start(start))?;
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    let all: Vec<&str> = text.lines().collect();
    let mut out = std::io::stdout().lock();
    for l in &all[all.len().saturating_sub(lines)..] {
        writeln!(out, "{l}")?;
    }
    out.flush()?;
    if !follow {
        return Ok(());
    }
    let mut pos = len;
    let mut buf = Vec::new();
    loop {
        std::thread::sleep(FOLLOW_POLL);
        let now = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if now < pos {
            // Rotated or truncated: start again from the top of the new file.
            f = std::fs::File::open(&path)?;
            pos = 0;
        }
        if now > pos {
            f.seek(SeekFrom::Start(pos))?;
            buf.clear();
            (&mut f).take(now - pos).read_to_end(&mut buf)?;
            pos = now;
            out.write_all(&buf)?;
            out.flush()?;
        }
    }
}
