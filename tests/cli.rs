//! CLI behaviour against the real binary: config errors, permissions and doctor, service
//! files, completions, colour, keys.
// Unix file modes, PTYs and POSIX shells: this suite runs on Linux and macOS; Windows is
// covered by the wine smoke test (scripts/test-windows).
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::TestHome;
use serde_json::Value;

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn config_errors_name_file_line_and_key() {
    let h = TestHome::new();
    h.ok(&["init", "--name", "cfg"]);
    let cfg = h.path().join("config.toml");
    std::fs::write(
        &cfg,
        "[node]\nname = \"cfg\"\n\n[mesh]\nlisten_prot = 4000\n",
    )
    .unwrap();
    let err = h.fails(&["start"]);
    let want = format!("{}:5:1", cfg.display());
    assert!(err.contains(&want), "{err}");
    assert!(
        err.contains("unknown key `listen_prot`") && err.contains("mesh.listen_prot"),
        "{err}"
    );

    std::fs::write(&cfg, "[mesh]\nlisten_port = \"many\"\n").unwrap();
    let err = h.fails(&["start"]);
    assert!(
        err.contains(":2:") && err.contains("mesh.listen_port"),
        "{err}"
    );

    std::fs::write(&cfg, "[mesh\n").unwrap();
    let err = h.fails(&["start"]);
    assert!(err.contains(&format!("{}:1:", cfg.display())), "{err}");

    // doctor reports the same problem and fails.
    let o = h.run(&["doctor", "--json"]);
    assert!(!o.status.success());
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let c = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "config")
        .unwrap();
    assert_eq!(c["level"], "fail");

    // Environment overrides are checked too.
    std::fs::write(&cfg, "").unwrap();
    let o = h
        .cmd(&["start"])
        .env("LOOPSY_MESH_PORT", "lots")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("LOOPSY_MESH_PORT") && err.contains("port number"),
        "{err}"
    );
    assert!(!h.running());
}

#[test]
fn loose_identity_is_refused_and_doctor_fixes_it() {
    let h = TestHome::new();
    h.ok(&["init"]);
    std::fs::write(
        h.path().join("config.toml"),
        "[mesh]\nlisten_port = 0\nlocal_only = true\n",
    )
    .unwrap();
    let id = h.path().join("identity.key");
    chmod(&id, 0o644);
    let err = h.fails(&["start"]);
    assert!(
        err.contains("identity.key has mode 0644") && err.contains("loopsy doctor --fix"),
        "{err}"
    );
    assert!(!h.running());

    let o = h.run(&["doctor"]);
    assert!(!o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("✗ identity") && out.contains("chmod 600"),
        "{out}"
    );

    let o = h.run(&["doctor", "--fix"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("(fixed)"), "{out}");
    assert_eq!(mode(&id), 0o600);
    h.ok(&["start"]);
    assert!(h.running());
}

#[test]
fn loose_token_and_socket_are_reported_and_fixed() {
    let h = TestHome::new();
    h.start();
    let sock = h.path().join("loopsy.sock");
    let tok = h.path().join("api.token");
    assert_eq!(mode(&sock), 0o600);
    chmod(&sock, 0o666);
    chmod(&tok, 0o644);
    let o = h.run(&["doctor", "--json"]);
    assert!(!o.status.success());
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let failed: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["level"] == "fail")
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["api token", "socket"]);
    assert!(h.run(&["doctor", "--fix"]).status.success());
    assert_eq!((mode(&sock), mode(&tok)), (0o600, 0o600));
    // A loose token is refused by `key show` until fixed.
    chmod(&tok, 0o604);
    let err = h.fails(&["key", "show"]);
    assert!(err.contains("doctor --fix"), "{err}");
}

#[test]
fn doctor_on_a_fresh_machine_says_what_to_do() {
    let h = TestHome::new();
    std::fs::remove_dir(h.path()).unwrap();
    let o = h.run(&["doctor"]);
    assert!(!o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("does not exist") && out.contains("loopsy init"),
        "{out}"
    );
}

#[test]
fn enable_writes_a_valid_systemd_unit_and_disable_removes_it() {
    let h = TestHome::new();
    let xdg = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        h.cmd(args)
            .env("XDG_CONFIG_HOME", xdg.path())
            .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent")
            .env("XDG_RUNTIME_DIR", xdg.path())
            .output()
            .unwrap()
    };
    let dry = run(&["enable", "--dry-run"]);
    assert!(dry.status.success());
    let unit_path = xdg.path().join("systemd/user/loopsy.service");
    assert!(!unit_path.exists(), "dry run writes nothing");
    let o = run(&["enable"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let exe = common::bin();
    assert!(
        unit.contains(&format!(
            "ExecStart=\"{}\" --home \"{}\" daemon --last-flags",
            exe.display(),
            h.path().display()
        )),
        "{unit}"
    );
    assert!(
        String::from_utf8_lossy(&dry.stdout).contains(&unit),
        "dry run shows the same unit"
    );
    match Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_path)
        .output()
    {
        Err(e) => common::skip_or_fail(&format!(
            "systemd-analyze cannot run ({e}): scripts/setup-test installs it (apt: systemd)"
        )),
        Ok(v) => {
            let msgs = format!(
                "{}{}",
                String::from_utf8_lossy(&v.stdout),
                String::from_utf8_lossy(&v.stderr)
            );
            assert!(v.status.success(), "systemd-analyze verify failed: {msgs}");
            assert!(
                !msgs.contains("loopsy.service:"),
                "systemd-analyze complains about the unit: {msgs}"
            );
        }
    }
    let o = run(&["disable"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!unit_path.exists());
    let o = run(&["disable"]);
    assert!(
        !o.status.success(),
        "disabling twice says nothing is installed"
    );
}

#[test]
fn completions_and_colour() {
    let h = TestHome::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = h.ok(&["completions", shell]);
        assert!(out.contains("loopsy") && out.contains("doctor"), "{shell}");
    }
    // Colour is on when forced, and NO_COLOR always wins.
    let forced = h
        .cmd(&["doctor"])
        .env_remove("NO_COLOR")
        .env("CLICOLOR_FORCE", "1")
        .output()
        .unwrap();
    assert!(forced.stdout.contains(&0x1b), "forced colour has escapes");
    let no = h
        .cmd(&["doctor"])
        .env("NO_COLOR", "1")
        .env("CLICOLOR_FORCE", "1")
        .output()
        .unwrap();
    assert!(
        !no.stdout.contains(&0x1b) && !no.stderr.contains(&0x1b),
        "NO_COLOR output has escapes"
    );
}

#[test]
fn help_lists_every_command() {
    let h = TestHome::new();
    let help = h.ok(&["--help"]);
    for cmd in [
        "init",
        "start",
        "stop",
        "restart",
        "status",
        "logs",
        "doctor",
        "enable",
        "disable",
        "mcp",
        "key",
        "completions",
    ] {
        assert!(
            help.contains(&format!("  {cmd} ")),
            "--help lacks {cmd}:\n{help}"
        );
    }
    assert!(
        !help.contains("  daemon "),
        "the internal daemon command is hidden"
    );
    assert!(h.ok(&["--version"]).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn logs_show_the_daemon_log_and_audit() {
    let h = TestHome::new();
    h.start();
    h.status();
    let log = h.ok(&["logs", "-n", "200"]);
    assert!(log.contains("loopsy daemon ready"), "{log}");
    let audit = h.ok(&["logs", "--audit", "-n", "1"]);
    let rec: Value = serde_json::from_str(audit.trim()).unwrap();
    assert_eq!(rec["tool"], "loopsy_status");
}
