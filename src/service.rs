//! `loopsy enable|disable`: run the daemon at login under the OS's service manager —
//! a systemd user unit (Linux), a launchd agent (macOS), a Task Scheduler entry (Windows).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use loopsy_mesh::Home;

use crate::ui::{self, DIM, OK, WARN};

/// systemd unit / launchd label / task name.
pub const LABEL: &str = "loopsy";
const LAUNCHD_LABEL: &str = "dev.loopsy.daemon";

fn quote_systemd(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The systemd user unit.
pub fn systemd_unit(exe: &Path, home: &Home) -> String {
    format!(
        "[Unit]\n\
         Description=loopsy daemon (mesh for terminals and AI coding agents)\n\
         Documentation=https://example.invalid/loopsy\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={} --home {} daemon\n\
         Restart=on-failure\n\
         RestartSec=2\n\
         # Session hosts (PTYs) outlive daemon restarts: stop only the daemon process.\n\
         KillMode=process\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        quote_systemd(&exe.display().to_string()),
        quote_systemd(&home.root().display().to_string()),
    )
}

/// The launchd agent plist.
pub fn launchd_plist(exe: &Path, home: &Home) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key><string>{LAUNCHD_LABEL}</string>
  <key>ProgramArguments</key>
  <array>
    <string>{}</string>
    <string>--home</string>
    <string>{}</string>
    <string>daemon</string>
  </array>
  <key>RunAtLoad</key><true/>
  <key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>
  <key>StandardOutPath</key><string>{}</string>
  <key>StandardErrorPath</key><string>{}</string>
  <key>ProcessType</key><string>Interactive</string>
</dict>
</plist>
"#,
        xml_escape(&exe.display().to_string()),
        xml_escape(&home.root().display().to_string()),
        xml_escape(&home.daemon_log().display().to_string()),
        xml_escape(&home.daemon_log().display().to_string()),
    )
}

/// The `schtasks` arguments that register the Windows logon task.
pub fn schtasks_args(exe: &Path, home: &Home) -> Vec<String> {
    vec![
        "/Create".into(),
        "/F".into(),
        "/SC".into(),
        "ONLOGON".into(),
        "/RL".into(),
        "LIMITED".into(),
        "/TN".into(),
        LABEL.into(),
        "/TR".into(),
        format!(
            "\"{}\" --home \"{}\" daemon",
            exe.display(),
            home.root().display()
        ),
    ]
}

fn systemd_unit_path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".config"),
    };
    Ok(base.join("systemd/user").join(format!("{LABEL}.service")))
}

fn launchd_plist_path() -> anyhow::Result<PathBuf> {
    let home = PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?);
    Ok(home
        .join("Library/LaunchAgents")
        .join(format!("{LAUNCHD_LABEL}.plist")))
}

fn run_quiet(cmd: &str, args: &[&str]) -> Result<(), String> {
    match Command::new(cmd).args(args).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// `loopsy enable`
pub fn enable(home: &Home, dry_run: bool) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the loopsy executable")?;
    if cfg!(target_os = "macos") {
        let path = launchd_plist_path()?;
        let body = launchd_plist(&exe, home);
        if dry_run {
            anstream::println!("would write {}:\n{body}", path.display());
            return Ok(());
        }
        crate::setup::ensure(home, None, false)?;
        crate::lifecycle::stop(home, true)?;
        write_file(&path, &body)?;
        let p = path.display().to_string();
        let _ = run_quiet("launchctl", &["unload", &p]);
        run_quiet("launchctl", &["load", "-w", &p]).map_err(anyhow::Error::msg)?;
        anstream::println!(
            "{} enabled: launchd agent {}",
            ui::paint(OK, "✓"),
            path.display()
        );
    } else if cfg!(windows) {
        let args = schtasks_args(&exe, home);
        if dry_run {
            anstream::println!("would run: schtasks {}", args.join(" "));
            return Ok(());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run_quiet("schtasks", &refs).map_err(anyhow::Error::msg)?;
        anstream::println!(
            "{} enabled: Task Scheduler entry {LABEL}",
            ui::paint(OK, "✓")
        );
    } else {
        let path = systemd_unit_path()?;
        let body = systemd_unit(&exe, home);
        if dry_run {
            anstream::println!("would write {}:\n{body}", path.display());
            return Ok(());
        }
        crate::setup::ensure(home, None, false)?;
        write_file(&path, &body)?;
        anstream::println!("{} wrote {}", ui::paint(OK, "✓"), path.display());
        match run_quiet("systemctl", &["--user", "daemon-reload"]) {
            Ok(()) => {
                crate::lifecycle::stop(home, true)?;
                run_quiet(
                    "systemctl",
                    &["--user", "enable", "--now", &format!("{LABEL}.service")],
                )
                .map_err(|e| {
                    anyhow::anyhow!("systemctl --user enable --now {LABEL} failed: {e}")
                })?;
                anstream::println!(
                    "{} enabled and started: systemctl --user status {LABEL}",
                    ui::paint(OK, "✓")
                );
            }
            Err(e) => anstream::println!(
                "{} no systemd user manager here ({e}); the unit is installed and starts at your next login.\n  {}",
                ui::paint(WARN, "!"),
                ui::paint(
                    DIM,
                    format!(
                        "to start now: systemctl --user daemon-reload && systemctl --user enable --now {LABEL}"
                    )
                )
            ),
        }
    }
    Ok(())
}

/// `loopsy disable`
pub fn disable(dry_run: bool) -> anyhow::Result<()> {
    if cfg!(target_os = "macos") {
        let path = launchd_plist_path()?;
        if dry_run {
            anstream::println!("would unload and remove {}", path.display());
            return Ok(());
        }
        let _ = run_quiet("launchctl", &["unload", "-w", &path.display().to_string()]);
        remove_file(&path)?;
    } else if cfg!(windows) {
        if dry_run {
            anstream::println!("would run: schtasks /Delete /F /TN {LABEL}");
            return Ok(());
        }
        run_quiet("schtasks", &["/Delete", "/F", "/TN", LABEL]).map_err(anyhow::Error::msg)?;
    } else {
        let path = systemd_unit_path()?;
        if dry_run {
            anstream::println!(
                "would disable {LABEL}.service and remove {}",
                path.display()
            );
            return Ok(());
        }
        let _ = run_quiet(
            "systemctl",
            &["--user", "disable", "--now", &format!("{LABEL}.service")],
        );
        remove_file(&path)?;
        let _ = run_quiet("systemctl", &["--user", "daemon-reload"]);
    }
    anstream::println!("{} disabled", ui::paint(OK, "✓"));
    Ok(())
}

fn write_file(path: &Path, body: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    loopsy_mesh::fsutil::atomic_write(path, body.as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn remove_file(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{} is not installed (nothing at {})", LABEL, path.display())
        }
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_files_name_the_binary_and_home() {
        let home = Home::new("/home/u/.loopsy dir");
        let exe = Path::new("/opt/bin/loopsy");
        let unit = systemd_unit(exe, &home);
        assert!(
            unit.contains("ExecStart=\"/opt/bin/loopsy\" --home \"/home/u/.loopsy dir\" daemon")
        );
        assert!(unit.contains("Restart=on-failure") && unit.contains("WantedBy=default.target"));
        let plist = launchd_plist(Path::new("/a&b/loopsy"), &home);
        assert!(plist.contains("<string>/a&amp;b/loopsy</string>"));
        assert!(plist.contains("<string>daemon</string>") && plist.contains(LAUNCHD_LABEL));
        let args = schtasks_args(exe, &home);
        assert_eq!(
            args.last().map(String::as_str),
            Some("\"/opt/bin/loopsy\" --home \"/home/u/.loopsy dir\" daemon")
        );
        assert!(args.contains(&"ONLOGON".to_string()));
    }
}
