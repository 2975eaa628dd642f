//! `/bin/sh` for command lines, `$SHELL` or `/bin/sh` for sessions.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

pub(crate) fn command_line_parts(line: &str) -> (PathBuf, Vec<String>) {
    (PathBuf::from("/bin/sh"), vec!["-c".into(), line.into()])
}

pub(crate) fn command_line(line: &str) -> Command {
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(line);
    c
}

pub(crate) fn default_shell(_path_env: Option<&OsStr>) -> PathBuf {
    PathBuf::from("/bin/sh")
}

pub(crate) fn program_names(bin: &str) -> Vec<String> {
    vec![bin.to_string()]
}

pub(crate) fn opener(url: &str) -> (&'static str, Vec<String>) {
    (crate::os::OPENER, vec![url.into()])
}

#[cfg(test)]
pub(crate) const SLEEP_IN_BACKGROUND: &str = "sleep 60 & sleep 60 & sleep 30";
