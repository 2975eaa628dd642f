//! `loopsy enable|disable`: run the daemon at login under the OS's service manager —
//! a systemd user unit (Linux), a launchd agent (macOS), a Task Scheduler entry (Windows).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use loopsy_mesh::Home;
use loopsy_sys::Os;

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
         ExecStart={} --home {} daemon --last-flags\n\
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
    <string>--last-flags</string>
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

/// The Task Scheduler definition (schtasks `/XML`): run the daemon at the user's logon, with
/// the user's own rights, restarted if it fails, never stopped for running long or on battery.
pub fn task_xml(exe: &Path, home: &Home, user: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-16"?>
<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">
  <RegistrationInfo>
    <Description>loopsy daemon (mesh for terminals and AI coding agents)</Description>
    <URI>\{LABEL}</URI>
  </RegistrationInfo>
  <Triggers>
    <LogonTrigger>
      <Enabled>true</Enabled>
      <UserId>{user}</UserId>
    </LogonTrigger>
  </Triggers>
  <Principals>
    <Principal id="Author">
      <UserId>{user}</UserId>
      <LogonType>InteractiveToken</LogonType>
      <RunLevel>LeastPrivilege</RunLevel>
    </Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <AllowHardTerminate>true</AllowHardTerminate>
    <StartWhenAvailable>true</StartWhenAvailable>
    <AllowStartOnDemand>true</AllowStartOnDemand>
    <Enabled>true</Enabled>
    <Hidden>false</Hidden>
    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>
    <RestartOnFailure>
      <Interval>PT1M</Interval>
      <Count>999</Count>
    </RestartOnFailure>
  </Settings>
  <Actions Context="Author">
    <Exec>
      <Command>{}</Command>
      <Arguments>--home "{}" daemon --last-flags</Arguments>
    </Exec>
  </Actions>
</Task>
"#,
        xml_escape(&exe.display().to_string()),
        xml_escape(&home.root().display().to_string()),
        user = xml_escape(user),
    )
}

/// `DOMAIN\user` for the task's principal.
fn windows_user() -> anyhow::Result<String> {
    let user = std::env::var("USERNAME").context("USERNAME is not set")?;
    Ok(match std::env::var("USERDOMAIN") {
        Ok(d) if !d.is_empty() => format!("{d}\\{user}"),
        _ => user,
    })
}

/// `gui/<uid>`: the launchd domain of the logged-in user's session.
fn launchd_domain() -> anyhow::Result<String> {
    let uid = loopsy_sys::process::user_id().context("no user id on this platform")?;
    Ok(format!("gui/{uid}"))
}

fn systemd_unit_path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => loopsy_sys::home_dir()
            .context("no home directory (HOME is not set)")?
            .join(".config"),
    };
    Ok(base.join("systemd/user").join(format!("{LABEL}.service")))
}

fn launchd_plist_path() -> anyhow::Result<PathBuf> {
    let home = loopsy_sys::home_dir().context("no home directory (HOME is not set)")?;
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
    match loopsy_sys::OS {
        Os::MacOs => enable_launchd(home, &exe, dry_run),
        Os::Windows => enable_task(home, &exe, dry_run),
        Os::Linux => enable_systemd(home, &exe, dry_run),
    }
}

fn enable_launchd(home: &Home, exe: &Path, dry_run: bool) -> anyhow::Result<()> {
    let path = launchd_plist_path()?;
    let body = launchd_plist(exe, home);
    if dry_run {
        anstream::println!("would write {}:\n{body}", path.display());
        return Ok(());
    }
    crate::setup::ensure(home, None, false)?;
    crate::lifecycle::stop(home, true)?;
    write_file(&path, &body)?;
    let domain = launchd_domain()?;
    // A loaded older definition is replaced: take it out first (absent is fine).
    let _ = run_quiet(
        "launchctl",
        &["bootout", &format!("{domain}/{LAUNCHD_LABEL}")],
    );
    run_quiet(
        "launchctl",
        &["bootstrap", &domain, &path.display().to_string()],
    )
    .map_err(|e| anyhow::anyhow!("launchctl bootstrap {domain} failed: {e}"))?;
    anstream::println!(
        "{} enabled: launchd agent {} (logs: {})",
        ui::paint(OK, "✓"),
        path.display(),
        home.daemon_log().display()
    );
    Ok(())
}

fn enable_task(home: &Home, exe: &Path, dry_run: bool) -> anyhow::Result<()> {
    let xml = task_xml(exe, home, &windows_user()?);
    if dry_run {
        anstream::println!("would register the task {LABEL} with schtasks /Create /XML:\n{xml}");
        return Ok(());
    }
    crate::setup::ensure(home, None, false)?;
    let file = home.root().join("loopsy-task.xml");
    // schtasks reads the file as the encoding its declaration names: UTF-16 with a BOM.
    let bytes: Vec<u8> = std::iter::once(0xfeff_u16)
        .chain(xml.encode_utf16())
        .flat_map(u16::to_le_bytes)
        .collect();
    loopsy_mesh::fsutil::atomic_write(&file, &bytes, loopsy_mesh::fsutil::PRIVATE_FILE)
        .with_context(|| format!("cannot write {}", file.display()))?;
    let r = run_quiet(
        "schtasks",
        &[
            "/Create",
            "/F",
            "/TN",
            LABEL,
            "/XML",
            &file.display().to_string(),
        ],
    );
    let _ = std::fs::remove_file(&file);
    r.map_err(|e| anyhow::anyhow!("schtasks /Create failed: {e}"))?;
    anstream::println!(
        "{} enabled: Task Scheduler task {LABEL} (runs at logon)",
        ui::paint(OK, "✓")
    );
    Ok(())
}

fn enable_systemd(home: &Home, exe: &Path, dry_run: bool) -> anyhow::Result<()> {
    let path = systemd_unit_path()?;
    let body = systemd_unit(exe, home);
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
            .map_err(|e| anyhow::anyhow!("systemctl --user enable --now {LABEL} failed: {e}"))?;
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
    Ok(())
}

/// `loopsy disable`
pub fn disable(dry_run: bool) -> anyhow::Result<()> {
    match loopsy_sys::OS {
        Os::MacOs => {
            let path = launchd_plist_path()?;
            if dry_run {
                anstream::println!("would unload and remove {}", path.display());
                return Ok(());
            }
            let target = format!("{}/{LAUNCHD_LABEL}", launchd_domain()?);
            let _ = run_quiet("launchctl", &["bootout", &target]);
            remove_file(&path)?;
        }
        Os::Windows => {
            if dry_run {
                anstream::println!("would run: schtasks /Delete /F /TN {LABEL}");
                return Ok(());
            }
            run_quiet("schtasks", &["/Delete", "/F", "/TN", LABEL])
                .map_err(|e| anyhow::anyhow!("schtasks /Delete failed: {e}"))?;
        }
        Os::Linux => {
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
    }
    anstream::println!("{} disabled", ui::paint(OK, "✓"));
    Ok(())
}

fn write_file(path: &Path, body: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    loopsy_mesh::fsutil::atomic_write(path, body.as_bytes(), loopsy_mesh::fsutil::PUBLIC_FILE)
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

    /// The plist parses as launchd reads it: Python's plistlib is as strict as `plutil -lint`
    /// about XML plists (a root dict, keys paired with typed values, escaped text).
    // Runs where python3 is (Linux CI, macOS); the Windows build checks its task XML under wine.
    #[cfg(unix)]
    #[test]
    fn the_launchd_plist_is_a_valid_property_list() {
        let home = Home::new("/Users/u/.loopsy <&> dir");
        let plist = launchd_plist(Path::new("/opt/bin/loopsy"), &home);
        let check = r#"
import plistlib, sys
d = plistlib.loads(sys.stdin.buffer.read())
assert d["Label"] == "dev.loopsy.daemon", d
assert d["ProgramArguments"] == ["/opt/bin/loopsy", "--home", "/Users/u/.loopsy <&> dir", "daemon", "--last-flags"], d
assert d["RunAtLoad"] is True and d["KeepAlive"] == {"SuccessfulExit": False}, d
assert d["StandardErrorPath"].endswith("daemon.log"), d
print("ok")
"#;
        let mut child = std::process::Command::new("python3")
            .args(["-c", check])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(plist.as_bytes())
            .expect("write the plist");
        let out = child.wait_with_output().expect("python3 ends");
        assert!(
            out.status.success(),
            "plistlib refused the plist: {}\n{plist}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn generated_files_name_the_binary_and_home() {
        let home = Home::new("/home/u/.loopsy dir");
        let exe = Path::new("/opt/bin/loopsy");
        let unit = systemd_unit(exe, &home);
        assert!(unit.contains(
            "ExecStart=\"/opt/bin/loopsy\" --home \"/home/u/.loopsy dir\" daemon --last-flags"
        ));
        assert!(unit.contains("Restart=on-failure") && unit.contains("WantedBy=default.target"));
        let plist = launchd_plist(Path::new("/a&b/loopsy"), &home);
        assert!(plist.contains("<string>/a&amp;b/loopsy</string>"));
        assert!(plist.contains("<string>daemon</string>") && plist.contains(LAUNCHD_LABEL));
        let xml = task_xml(
            Path::new("C:\\Program Files\\loopsy.exe"),
            &home,
            "PC\\u<1>",
        );
        assert!(xml.contains("<Command>C:\\Program Files\\loopsy.exe</Command>"));
        assert!(
            xml.contains(
                "<Arguments>--home \"/home/u/.loopsy dir\" daemon --last-flags</Arguments>"
            )
        );
        assert!(xml.contains("<UserId>PC\\u&lt;1&gt;</UserId>"));
        assert!(xml.contains("<LogonTrigger>"));
    }
}
