//! `loopsy doctor`: check everything a working daemon needs and say how to fix each problem.

use std::path::Path;
use std::process::ExitCode;

use loopsy_mesh::fsutil::{self, PRIVATE_DIR, PRIVATE_FILE};
use loopsy_mesh::{Config, Home, Identity, PidLock, token};
use serde::Serialize;

use crate::lifecycle::{self, ProbeError};
use crate::ui::{self, BAD, DIM, OK, WARN};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fine.
    Ok,
    /// Worth knowing, not broken.
    Warn,
    /// Broken.
    Fail,
}

/// One check.
#[derive(Debug, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// Result.
    pub level: Level,
    /// What was found.
    pub detail: String,
    /// How to fix it, when broken.
    pub fix: Option<String>,
    /// Whether `--fix` repaired it in this run.
    pub fixed: bool,
}

fn check(
    name: &'static str,
    level: Level,
    detail: impl Into<String>,
    fix: Option<String>,
) -> Check {
    Check {
        name,
        level,
        detail: detail.into(),
        fix,
        fixed: false,
    }
}

/// A private file: exists, owner-only (fixing the mode when `fix`).
fn private_file(name: &'static str, path: &Path, want: u32, fix: bool) -> Check {
    match fsutil::mode_of(path) {
        Err(_) => check(
            name,
            Level::Fail,
            format!("{} is missing", path.display()),
            Some("run `loopsy init`".into()),
        ),
        Ok(mode) if mode & 0o077 != 0 => {
            let mut c = check(
                name,
                Level::Fail,
                format!("{} has mode {mode:04o}; others can read it", path.display()),
                Some(format!(
                    "`loopsy doctor --fix` or `chmod {want:o} {}`",
                    path.display()
                )),
            );
            if fix && fsutil::set_mode(path, want).is_ok() {
                c.level = Level::Ok;
                c.fixed = true;
                c.detail = format!("{} was {mode:04o}, now {want:04o}", path.display());
            }
            c
        }
        Ok(mode) => check(
            name,
            Level::Ok,
            format!("{} ({mode:04o})", path.display()),
            None,
        ),
    }
}

/// Run every check.
pub fn run_checks(home: &Home, fix: bool) -> Vec<Check> {
    let mut out = Vec::new();
    if !home.root().exists() {
        out.push(check(
            "data dir",
            Level::Fail,
            format!("{} does not exist", home.root().display()),
            Some("run `loopsy init` (or `loopsy start`)".into()),
        ));
        return out;
    }
    out.push(private_file("data dir", home.root(), PRIVATE_DIR, fix));
    if let Err(e) = home.check_socket_path() {
        out.push(check(
            "socket path",
            Level::Fail,
            e,
            Some("use a shorter LOOPSY_HOME".into()),
        ));
    }

    match Config::load(&home.config(), &Default::default()) {
        Ok(cfg) => {
            out.push(check(
                "config",
                Level::Ok,
                format!("{} (name {})", home.config().display(), cfg.node_name()),
                None,
            ));
            let opened = cfg.files.opened_defaults();
            if !opened.is_empty() {
                out.push(check(
                    "files",
                    Level::Warn,
                    format!(
                        "{} default protection(s) taken out: {}. A peer with files-read may then read a secret, or with files-write run code here (anything that runs or reads that path later runs what it wrote)",
                        opened.len(),
                        opened.join("; ")
                    ),
                    Some("put them back in config.toml's [files] unless you mean it (`loopsy init --force` shows the defaults)".into()),
                ));
            }
        }
        Err(e) => out.push(check(
            "config",
            Level::Fail,
            e.to_string(),
            Some(
                "edit the file at that line (`loopsy init --force` rewrites it with defaults)"
                    .into(),
            ),
        )),
    }

    let mut id = private_file("identity", &home.identity(), PRIVATE_FILE, fix);
    if id.level == Level::Ok {
        match Identity::load(&home.identity()) {
            Ok(i) => id.detail = format!("{} peer id {}", id.detail, i.peer_id()),
            Err(e) => {
                id.level = Level::Fail;
                id.detail = e.to_string();
                id.fix = Some("move the file away and run `loopsy init --force`".into());
            }
        }
    }
    out.push(id);

    let mut tok = private_file("api token", &home.token(), PRIVATE_FILE, fix);
    if tok.level == Level::Ok
        && let Err(e) = token::read(&home.token())
    {
        tok.level = Level::Fail;
        tok.detail = e;
        tok.fix = Some("run `loopsy key rotate`".into());
    }
    out.push(tok);

    match lifecycle::probe(home) {
        Ok(w) if w.version == loopsy_mesh::VERSION => out.push(check(
            "daemon",
            Level::Ok,
            format!("running, pid {}, version {}", w.pid, w.version),
            None,
        )),
        Ok(w) => out.push(check(
            "daemon",
            Level::Fail,
            format!(
                "running version {} (pid {}), but this CLI is {}",
                w.version,
                w.pid,
                loopsy_mesh::VERSION
            ),
            Some("run `loopsy restart`".into()),
        )),
        Err(ProbeError::NotRunning) => {
            let held = PidLock::holder(&home.pidfile()).ok().flatten();
            out.push(match held {
                Some(pid) => check(
                    "daemon",
                    Level::Fail,
                    format!("pid {pid} holds the pidfile but the socket does not answer"),
                    Some(format!(
                        "see `loopsy logs`; then `kill {pid}` and `loopsy start`"
                    )),
                ),
                None => check(
                    "daemon",
                    Level::Warn,
                    "not running",
                    Some("run `loopsy start`".into()),
                ),
            });
        }
        Err(ProbeError::Control(e)) => out.push(check(
            "daemon",
            Level::Fail,
            format!("the control socket answered wrongly: {e}"),
            Some("run `loopsy restart`".into()),
        )),
    }

    if std::fs::symlink_metadata(home.socket()).is_ok() {
        out.push(private_file("socket", &home.socket(), PRIVATE_FILE, fix));
    }
    relay_checks(home, fix, &mut out);
    relay_node_checks(home, &mut out);
    out
}

/// Mesh relay nodes: each one this node knows should hold a reservation.
fn relay_node_checks(home: &Home, out: &mut Vec<Check>) {
    let Ok(s) = crate::client::Session::connect(home) else {
        return;
    };
    let Ok(st) = s.call("loopsy_status", serde_json::json!({})) else {
        return;
    };
    if st["mesh"]["relay_serving"] == true {
        out.push(check(
            "relay node",
            Level::Ok,
            format!(
                "serving trusted peers ({} refused to strangers)",
                st["mesh"]["relay_refused"].as_u64().unwrap_or(0)
            ),
            None,
        ));
    }
    for r in st["mesh"]["relays"].as_array().into_iter().flatten() {
        let name = r["name"].as_str().unwrap_or("?");
        if r["reserved_since"].is_u64() {
            out.push(check(
                "mesh relay",
                Level::Ok,
                format!("reserved on {name}"),
                None,
            ));
        } else {
            out.push(check(
                "mesh relay",
                Level::Warn,
                format!(
                    "no reservation on {name}: {}",
                    r["error"].as_str().unwrap_or("not reached yet")
                ),
                Some(format!(
                    "peers behind NATs cannot reach this machine through {name}: check that it runs (`loopsy relay-node` there), that {} is reachable from here, and that the two are paired",
                    r["address"].as_str().unwrap_or("its address")
                )),
            ));
        }
    }
}

/// The phone relay's files and link, once a relay is configured.
fn relay_checks(home: &Home, fix: bool, out: &mut Vec<Check>) {
    let relay = loopsy_mcp::phone::creds::path(home);
    if !relay.exists() {
        return;
    }
    out.push(private_file("relay", &relay, PRIVATE_FILE, fix));
    let phones = home.root().join("phones.json");
    if phones.exists() {
        out.push(private_file("phones", &phones, PRIVATE_FILE, fix));
    }
    let Ok(s) = crate::client::Session::connect(home) else {
        return;
    };
    match s.call("loopsy_relay_status", serde_json::json!({})) {
        Ok(v) if v["state"] == "connected" => out.push(check(
            "relay link",
            Level::Ok,
            format!("connected to {}", v["url"].as_str().unwrap_or("?")),
            None,
        )),
        Ok(v) => out.push(check(
            "relay link",
            Level::Warn,
            format!(
                "{} ({}): {}",
                v["state"].as_str().unwrap_or("?"),
                v["url"].as_str().unwrap_or("?"),
                v["last_error"].as_str().unwrap_or("no reason given")
            ),
            Some(
                "check that the relay is up (`curl <url>/health`); if it was redeployed or reset, run `loopsy relay configure <url>` again".into(),
            ),
        )),
        Err(e) => out.push(check("relay link", Level::Warn, e.to_string(), None)),
    }
}

/// `loopsy doctor`
pub fn doctor(home: &Home, fix: bool, json: bool) -> anyhow::Result<ExitCode> {
    let checks = run_checks(home, fix);
    let failed = checks.iter().any(|c| c.level == Level::Fail);
    if json {
        ui::print_json(&serde_json::json!({ "ok": !failed, "checks": checks }))?;
    } else {
        for c in &checks {
            let mark = match c.level {
                Level::Ok => ui::paint(OK, "✓"),
                Level::Warn => ui::paint(WARN, "!"),
                Level::Fail => ui::paint(BAD, "✗"),
            };
            let fixed = if c.fixed { " (fixed)" } else { "" };
            anstream::println!("{mark} {:<10} {}{fixed}", c.name, c.detail);
            if c.level != Level::Ok
                && let Some(f) = &c.fix
            {
                anstream::println!("  {} {}", ui::paint(DIM, "fix:"), f);
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
