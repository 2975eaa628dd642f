//! Process trees: starting a program so that it and everything it starts can be stopped as
//! one (a process group on Unix, a Job Object on Windows), detaching long-lived processes from
//! the terminal that started them, and reading how a process ended.

use std::process::{Command, ExitStatus};

use crate::imp::process as imp;

pub use imp::Tree;

/// Start the program in its own process group, so a [`Tree`] can reach everything it starts
/// and a Ctrl-C in the terminal that started us does not reach it.
pub fn own_group(cmd: &mut Command) {
    imp::own_group(cmd);
}

/// How a long-lived background process is started by [`detach`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detach {
    /// In its own process group (the daemon): a Ctrl-C in the starting terminal misses it.
    Group,
    /// As a process that calls [`new_session`] first thing (a session host); on Unix nothing
    /// is done at spawn, since a group leader could not start a session.
    Session,
}

/// Start a long-lived background process (the daemon, a session host): see [`Detach`]; on
/// Windows either way it gets no console of its own and inherits none.
pub fn detach(cmd: &mut Command, how: Detach) {
    imp::detach(cmd, how);
}

/// Leave the terminal's session (Unix `setsid`), so a closing terminal or a dying daemon
/// takes nothing with it. A no-op on Windows, where [`detach`] did it at spawn.
pub fn new_session() {
    imp::new_session();
}

/// The current user's numeric id (`getuid`; `None` on Windows, which has SIDs instead).
pub fn user_id() -> Option<u32> {
    imp::user_id()
}

/// Is a process with this id alive?
pub fn alive(pid: u32) -> bool {
    imp::alive(pid)
}

/// The signal that ended a process, if one did (always `None` on Windows).
pub fn exit_signal(status: &ExitStatus) -> Option<i32> {
    imp::exit_signal(status)
}

/// Whether processes end by signals here (not on Windows, where a killed process exits with
/// a code).
pub const HAS_SIGNALS: bool = imp::HAS_SIGNALS;

/// The signal number a forced kill reports (`SIGKILL`), on every platform.
pub const KILL_SIGNAL: i32 = 9;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn own_process_is_alive_and_a_reaped_child_is_not() -> std::io::Result<()> {
        assert!(alive(std::process::id()));
        let mut c = crate::shell::command_line("exit 3");
        let status = c.status()?;
        assert_eq!(status.code(), Some(3));
        assert_eq!(exit_signal(&status), None);
        Ok(())
    }

    #[tokio::test]
    async fn a_tree_is_killed_whole() -> std::io::Result<()> {
        // A shell that leaves a long sleeper behind, in its group (or job).
        let mut cmd = crate::shell::command_line(crate::shell::SLEEP_IN_BACKGROUND);
        own_group(&mut cmd);
        let mut child = tokio::process::Command::from(cmd).spawn()?;
        let tree = Tree::adopt(&child)?;
        assert!(!tree.is_empty());
        tree.kill();
        let _ = child.wait().await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !tree.is_empty() {
            assert!(Instant::now() < deadline, "the tree outlived its kill");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}
