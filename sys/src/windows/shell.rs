//! `cmd.exe /S /C` for command lines (as OpenSSH for Windows does); PowerShell for sessions.

use std::ffi::OsStr;
use std::os::windows::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

/// `cmd.exe` from `%ComSpec%`, else by name.
fn cmd_exe() -> PathBuf {
    std::env::var_os("ComSpec")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cmd.exe"))
}

pub(crate) fn command_line_parts(line: &str) -> (PathBuf, Vec<String>) {
    (cmd_exe(), vec!["/S".into(), "/C".into(), line.into()])
}

/// `cmd.exe /S /C <line>`, the line passed as it is: cmd.exe does not parse the quoting that
/// ordinary argument passing would add.
pub(crate) fn command_line(line: &str) -> Command {
    let mut c = Command::new(cmd_exe());
    c.raw_arg(format!("/S /C \"{line}\""));
    c
}

pub(crate) fn default_shell(path_env: Option<&OsStr>) -> PathBuf {
    for ps in ["pwsh.exe", "powershell.exe"] {
        if let Some(p) = path_env
            .into_iter()
            .flat_map(std::env::split_paths)
            .map(|d| d.join(ps))
            .find(|p| p.is_file())
        {
            return p;
        }
    }
    cmd_exe()
}

/// `bin` as given when it has an extension, and `bin` with each extension of `PATHEXT`.
pub(crate) fn program_names(bin: &str) -> Vec<String> {
    let exts = std::env::var("PATHEXT").unwrap_or_else(|_| ".COM;.EXE;.BAT;.CMD".into());
    let mut names: Vec<String> = exts
        .split(';')
        .filter(|e| !e.is_empty())
        .map(|e| format!("{bin}{}", e.to_ascii_lowercase()))
        .collect();
    if std::path::Path::new(bin).extension().is_some() {
        names.insert(0, bin.to_string());
    }
    names
}

pub(crate) fn opener(url: &str) -> (&'static str, Vec<String>) {
    (
        "rundll32.exe",
        vec!["url.dll,FileProtocolHandler".into(), url.into()],
    )
}

#[cfg(test)]
pub(crate) const SLEEP_IN_BACKGROUND: &str =
    "start /b cmd /c ping -n 60 127.0.0.1 >nul & ping -n 30 127.0.0.1 >nul";
