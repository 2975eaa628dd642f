//! The user's shell and browser: what runs a command line (`/bin/sh -c` on Unix, `cmd.exe /C`
//! on Windows), the interactive shell a new session starts (`$SHELL`; PowerShell on Windows),
//! and how a URL is opened.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

use crate::imp::shell as imp;

/// The program and arguments that run `line` through the platform's command interpreter.
pub fn command_line_parts(line: &str) -> (PathBuf, Vec<String>) {
    imp::command_line_parts(line)
}

/// A [`Command`] that runs `line` through the platform's command interpreter.
pub fn command_line(line: &str) -> Command {
    imp::command_line(line)
}

/// The interactive shell for a new session: `shell_env` (the user's `$SHELL`) when set, else
/// the platform's default (`/bin/sh`; on Windows PowerShell when on `path_env`, else
/// `%COMSPEC%`, else `cmd.exe`).
pub fn interactive(shell_env: Option<&OsStr>, path_env: Option<&OsStr>) -> PathBuf {
    match shell_env.filter(|s| !s.is_empty()) {
        Some(s) => PathBuf::from(s),
        None => imp::default_shell(path_env),
    }
}

/// The first executable file called `bin` in the absolute directories of `path_env` (on
/// Windows also `bin` with each extension of `PATHEXT`, as `claude.cmd`).
pub fn find_on_path(bin: &str, path_env: Option<&OsStr>) -> Option<PathBuf> {
    let names = imp::program_names(bin);
    std::env::split_paths(path_env?)
        .filter(|d| d.is_absolute())
        .flat_map(|d| names.iter().map(move |n| d.join(n)).collect::<Vec<_>>())
        .find(|p| std::fs::metadata(p).is_ok_and(|m| crate::fs::is_executable(p, &m)))
}

/// The program and arguments that open `url` in the user's browser.
pub fn opener(url: &str) -> (&'static str, Vec<String>) {
    imp::opener(url)
}

/// Test helper: a command line that leaves a long-running child behind.
#[cfg(test)]
pub(crate) const SLEEP_IN_BACKGROUND: &str = imp::SLEEP_IN_BACKGROUND;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_run_through_the_interpreter() -> std::io::Result<()> {
        let out = command_line("echo loopsy").output()?;
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "loopsy");
        Ok(())
    }

    #[test]
    fn the_user_shell_wins_over_the_default() {
        assert_eq!(
            interactive(Some(OsStr::new("/bin/zsh")), None),
            PathBuf::from("/bin/zsh")
        );
        assert!(!interactive(None, None).as_os_str().is_empty());
        assert!(
            !interactive(Some(OsStr::new("")), None)
                .as_os_str()
                .is_empty()
        );
    }
}
