//! Process groups and signals.

use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

pub(crate) const HAS_SIGNALS: bool = true;

pub(crate) fn own_group(cmd: &mut Command) {
    cmd.process_group(0);
}

pub(crate) fn detach(cmd: &mut Command, how: crate::process::Detach) {
    if how == crate::process::Detach::Group {
        cmd.process_group(0);
    }
}

pub(crate) fn new_session() {
    let _ = nix::unistd::setsid();
}

pub(crate) fn user_id() -> Option<u32> {
    Some(nix::unistd::getuid().as_raw())
}

pub(crate) fn alive(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|p| kill(Pid::from_raw(p), None).is_ok())
}

pub(crate) fn exit_signal(status: &ExitStatus) -> Option<i32> {
    status.signal()
}

/// A process and everything it started: its process group.
#[derive(Debug, Clone)]
pub struct Tree {
    pgid: Pid,
}

impl Tree {
    /// The tree of a child started with [`crate::process::own_group`].
    pub fn adopt(child: &tokio::process::Child) -> io::Result<Self> {
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("the process has already been reaped"))?;
        Self::of_leader(pid)
    }

    /// The tree led by `pid`, a process that leads its own group (a PTY's program does).
    pub fn of_leader(pid: u32) -> io::Result<Self> {
        let pgid = i32::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
        Ok(Self {
            pgid: Pid::from_raw(pgid),
        })
    }

    /// Ask the whole tree to end (`SIGTERM`; on Windows this is [`Tree::kill`]).
    pub fn terminate(&self) {
        let _ = killpg(self.pgid, Signal::SIGTERM);
    }

    /// Interrupt, as Ctrl-C at a terminal does (`SIGINT`; on Windows this is [`Tree::kill`]).
    pub fn interrupt(&self) {
        let _ = killpg(self.pgid, Signal::SIGINT);
    }

    /// Hang up, as a closing terminal does (`SIGHUP`, then `SIGCONT` so stopped ones see it).
    pub fn hang_up(&self) {
        let _ = killpg(self.pgid, Signal::SIGHUP);
        let _ = killpg(self.pgid, Signal::SIGCONT);
    }

    /// End the whole tree now (`SIGKILL`).
    pub fn kill(&self) {
        let _ = killpg(self.pgid, Signal::SIGKILL);
    }

    /// True once no process of the tree is left.
    pub fn is_empty(&self) -> bool {
        killpg(self.pgid, None).is_err()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn terminate_reports_the_signal() -> io::Result<()> {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        own_group(&mut cmd);
        let mut child = tokio::process::Command::from(cmd).spawn()?;
        let tree = Tree::adopt(&child)?;
        tree.terminate();
        let st = child.wait().await?;
        assert_eq!(exit_signal(&st), Some(15));
        Ok(())
    }
}
