//! `loopsy pair`, `loopsy peers …`, `loopsy exec`, `loopsy mesh status`: the mesh from the CLI,
//! all through the daemon's tools.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use loopsy_mesh::Home;
use serde_json::{Value, json};

use crate::client::Session;
use crate::ui::{self, BOLD, DIM, OK, WARN};

/// `loopsy pair` (show a code and wait) or `loopsy pair <addr>` (enter the other's code).
pub fn pair(
    home: &Home,
    addr: Option<&str>,
    code: Option<&str>,
    ttl: u64,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let s = Session::connect(home)?;
    match addr {
        Some(addr) => {
            let code = match code {
                Some(c) => c.to_string(),
                None => read_code()?,
            };
            let peer = s.call("loopsy_pair_with", json!({ "addr": addr, "code": code }))?;
            if json_out {
                ui::print_json(&peer)?;
            } else {
                anstream::println!(
                    "{} paired with {} ({})",
                    ui::paint(OK, "✓"),
                    ui::paint(BOLD, peer["name"].as_str().unwrap_or("?")),
                    peer["peer_id"].as_str().unwrap_or("?")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let t = s.call("loopsy_pair_open", json!({ "ttl_s": ttl }))?;
            if json_out {
                // One line now (scripts read it), one line when done.
                println!("{}", serde_json::to_string(&t)?);
                std::io::stdout().flush()?;
            } else {
                let code = t["code"].as_str().unwrap_or("??????");
                anstream::println!(
                    "Pairing code: {}  (valid {} min)",
                    ui::paint(BOLD, format!("{} {}", &code[..3], &code[3..])),
                    ttl / 60
                );
                anstream::println!("On the other machine run one of:");
                for a in t["addrs"].as_array().into_iter().flatten() {
                    anstream::println!("  loopsy pair {}", a.as_str().unwrap_or_default());
                }
                anstream::println!("{}", ui::paint(DIM, "waiting… (Ctrl-C to cancel)"));
            }
            let client = s.client().context("session closed")?;
            let waited = s.block_on(async {
                tokio::select! {
                    r = client.call("loopsy_pair_wait", json!({})) => Some(r),
                    _ = tokio::signal::ctrl_c() => None,
                }
            });
            let Some(r) = waited else {
                let _ = s.call("loopsy_pair_close", json!({}));
                anstream::eprintln!("cancelled; the code no longer works");
                return Ok(ExitCode::from(130));
            };
            let r = r?;
            let v = r.structured_content.unwrap_or(Value::Null);
            if r.is_error == Some(true) {
                bail!("{}", v["message"].as_str().unwrap_or("pairing failed"));
            }
            if json_out {
                // The reader may have gone (a script that only wanted the code): not an error.
                let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string(&v)?);
            } else {
                anstream::println!(
                    "{} paired with {} ({})",
                    ui::paint(OK, "✓"),
                    ui::paint(BOLD, v["name"].as_str().unwrap_or("?")),
                    v["peer_id"].as_str().unwrap_or("?")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn read_code() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Pairing code shown on the other machine: ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    let line = line.trim().to_string();
    if line.is_empty() {
        bail!("no code given; pass --code or type it when asked");
    }
    Ok(line)
}

/// How long ago unix time `t` was, briefly: `42s`, `3m`, `5h`, `2d`.
fn age(t: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(t);
    let d = now.saturating_sub(t);
    match d {
        0..60 => format!("{d}s"),
        60..3600 => format!("{}m", d / 60),
        3600..86400 => format!("{}h", d / 3600),
        _ => format!("{}d", d / 86400),
    }
}

fn print_peers(peers: &[Value]) {
    if peers.is_empty() {
        anstream::println!(
            "no peers yet: run `loopsy pair` here and `loopsy pair <addr>` on the other machine"
        );
        return;
    }
    anstream::println!(
        "{}",
        ui::paint(
            BOLD,
            format!(
                "{:<16} {:<8} {:<22} {:>6} {:>9}  {:<18} {}",
                "NAME", "STATE", "PATH", "SINCE", "RTT", "ADMITTED", "PEER ID"
            )
        )
    );
    for p in peers {
        let online = p["online"].as_bool().unwrap_or(false);
        let state = if online {
            ui::paint(OK, "online ")
        } else {
            ui::paint(WARN, "offline")
        };
        let rtt = p["rtt_ms"]
            .as_f64()
            .map(|r| format!("{r:.2} ms"))
            .unwrap_or_else(|| "-".into());
        let path = match (p["path"].as_str(), p["via"].as_str()) {
            (Some(path), Some(via)) => format!("{path} via {via}"),
            (Some(path), None) => path.to_string(),
            _ => "-".into(),
        };
        let since = p["path_since"]
            .as_u64()
            .filter(|_| online)
            .map(age)
            .unwrap_or_else(|| "-".into());
        let vouchers: Vec<&str> = p["introduced_by"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let admitted = if vouchers.is_empty() {
            "paired here".to_string()
        } else {
            format!("via {}", ui::safe_line(&vouchers.join(", ")))
        };
        anstream::println!(
            "{:<16} {} {:<22} {:>6} {:>9}  {:<18} {}",
            ui::safe_line(p["name"].as_str().unwrap_or("?")),
            state,
            path,
            since,
            rtt,
            admitted,
            ui::paint(DIM, p["peer_id"].as_str().unwrap_or("?"))
        );
    }
}

/// `loopsy peers list`
pub fn peers_list(home: &Home, json_out: bool) -> anyhow::Result<ExitCode> {
    let s = Session::connect(home)?;
    let v = s.call("loopsy_list_peers", json!({}))?;
    if json_out {
        ui::print_json(&v["peers"])?;
    } else {
        print_peers(v["peers"].as_array().map(Vec::as_slice).unwrap_or_default());
    }
    Ok(ExitCode::SUCCESS)
}

/// `loopsy peers add|remove|rename|grant|revoke`
pub fn peers_change(home: &Home, tool: &'static str, args: Value) -> anyhow::Result<ExitCode> {
    let s = Session::connect(home)?;
    let v = s.call(tool, args.clone())?;
    let what = match tool {
        "loopsy_peer_add" => format!(
            "connected to {} at {}",
            v["connected"].as_str().unwrap_or("?"),
            v["dialing"].as_str().unwrap_or("?")
        ),
        "loopsy_peer_remove" if args["here_only"].as_bool() == Some(true) => format!(
            "removed {} here and cut it off (other members keep it)",
            v["name"].as_str().unwrap_or("?")
        ),
        "loopsy_peer_remove" => format!(
            "removed {} and cut it off; every member drops it too",
            v["name"].as_str().unwrap_or("?")
        ),
        _ => {
            let caps: Vec<&str> = v["caps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            format!(
                "{} may now: {}",
                v["name"].as_str().unwrap_or("?"),
                if caps.is_empty() {
                    "nothing".into()
                } else {
                    caps.join(", ")
                }
            )
        }
    };
    anstream::println!("{} {what}", ui::paint(OK, "✓"));
    Ok(ExitCode::SUCCESS)
}

/// `loopsy mesh status [--json] [--watch]`
pub fn mesh_status(home: &Home, json_out: bool, watch: bool) -> anyhow::Result<ExitCode> {
    let s = Session::connect(home)?;
    loop {
        let me = s.call("loopsy_status", json!({}))?;
        let peers = s.call("loopsy_list_peers", json!({}))?;
        if json_out {
            println!(
                "{}",
                serde_json::to_string(&json!({ "node": me, "peers": peers["peers"] }))?
            );
        } else {
            if watch {
                print!("\x1b[2J\x1b[H");
            }
            anstream::println!(
                "{} {} {}",
                ui::paint(OK, "●"),
                ui::paint(BOLD, me["name"].as_str().unwrap_or("?")),
                ui::paint(DIM, me["peer_id"].as_str().unwrap_or("?"))
            );
            for a in me["listen_addrs"].as_array().into_iter().flatten() {
                anstream::println!("  listening {}", a.as_str().unwrap_or_default());
            }
            let m = &me["messages"];
            anstream::println!(
                "  messages  {} unread in the inbox, {} waiting to be delivered",
                m["unread"].as_u64().unwrap_or(0),
                m["outbox"].as_u64().unwrap_or(0)
            );
            let n = &me["mesh"];
            let reach = match n["nat"].as_str() {
                Some("public") => ui::paint(OK, "publicly reachable"),
                Some("private") => ui::paint(ui::WARN, "behind a NAT"),
                _ => ui::paint(DIM, "reachability not known yet"),
            };
            anstream::println!("  reach     {reach} (AutoNAT, asked of relay nodes)");
            if let Some(n) = n["inbox_snoops"].as_u64().filter(|n| *n > 0) {
                anstream::println!(
                    "  {}   {n} peer(s) tried to read another machine's inbox (disconnected; see the log)",
                    ui::paint(ui::WARN, "snoops")
                );
            }
            let hp = &n["hole_punches"];
            if let (Some(ok), Some(failed)) = (hp["succeeded"].as_u64(), hp["failed"].as_u64())
                && ok + failed > 0
            {
                anstream::println!(
                    "  punching  {ok} relayed connection(s) upgraded to direct, {failed} attempt(s) failed"
                );
            }
            if let Some(n) = n["members_refused"].as_u64().filter(|n| *n > 0) {
                anstream::println!(
                    "  {}  {n} introduction(s) or removal(s) from members refused (limits, authority, signatures; see the log)",
                    ui::paint(ui::WARN, "refused")
                );
            }
            if let Some(n) = n["context_refused"].as_u64().filter(|n| *n > 0) {
                anstream::println!(
                    "  {}  {n} context change(s) not shown here (an author without `context` here, or over a limit; see the log)",
                    ui::paint(ui::WARN, "context")
                );
            }
            if n["relay_serving"] == true {
                anstream::println!(
                    "  serving   {} for trusted peers ({} refused to strangers)",
                    ui::paint(OK, "as a relay node"),
                    n["relay_refused"].as_u64().unwrap_or(0)
                );
            }
            for r in n["relays"].as_array().into_iter().flatten() {
                let name = r["name"].as_str().unwrap_or("?");
                match (r["reserved_since"].as_u64(), r["error"].as_str()) {
                    (Some(t), _) => anstream::println!(
                        "  via relay {} {name} (reserved {} ago)",
                        ui::paint(OK, "●"),
                        age(t)
                    ),
                    (None, err) => anstream::println!(
                        "  via relay {} {name}{}",
                        ui::paint(ui::WARN, "○"),
                        err.map(|e| format!(": {e}")).unwrap_or_default()
                    ),
                }
            }
            let r = &me["relay"];
            match (r["state"].as_str(), r["url"].as_str()) {
                (Some("connected"), Some(u)) => anstream::println!(
                    "  phones    {} to {u}, {} phone connections",
                    ui::paint(OK, "connected"),
                    r["phones_connected"].as_u64().unwrap_or(0)
                ),
                (Some(st), Some(u)) => anstream::println!(
                    "  phones    {} {u}{}",
                    ui::paint(ui::WARN, st),
                    r["last_error"]
                        .as_str()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
                _ => anstream::println!(
                    "  phones    {}",
                    ui::paint(DIM, "no phone relay (`loopsy relay configure <url>`)")
                ),
            }
            anstream::println!();
            print_peers(
                peers["peers"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
            );
        }
        if !watch {
            return Ok(ExitCode::SUCCESS);
        }
        std::io::stdout().flush()?;
        std::thread::sleep(Duration::from_secs(2));
    }
}
