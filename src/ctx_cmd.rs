//! `loopsy ctx set|get|ls|rm`: the shared context from the command line.

use std::process::ExitCode;

use anyhow::Context;
use loopsy_mesh::Home;
use serde_json::{Value, json};

use crate::client::Session;
use crate::ui::{self, DIM, OK};

fn with_peer(mut v: Value, peer: Option<&str>) -> Value {
    if let Some(p) = peer {
        v["peer"] = json!(p);
    }
    v
}

/// `loopsy ctx set KEY VALUE [--json] [--ttl S] [--peer P]`
pub fn set(
    home: &Home,
    key: &str,
    value: &str,
    as_json: bool,
    ttl: Option<u64>,
    peer: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let value: Value = if as_json {
        serde_json::from_str(value)
            .context("VALUE is not valid JSON (drop --json to store it as a string)")?
    } else {
        json!(value)
    };
    let mut args = json!({ "key": key, "value": value });
    if let Some(t) = ttl {
        args["ttl_s"] = json!(t);
    }
    let s = Session::connect(home)?;
    s.call("loopsy_context_set", with_peer(args, peer))?;
    anstream::println!("{} {key}", ui::paint(OK, "✓ set"));
    Ok(ExitCode::SUCCESS)
}

/// `loopsy ctx get KEY [--json] [--peer P]`: prints the value (strings raw); exit 1 if unset.
pub fn get(home: &Home, key: &str, json_out: bool, peer: Option<&str>) -> anyhow::Result<ExitCode> {
    let s = Session::connect(home)?;
    let v = s.call("loopsy_context_get", with_peer(json!({ "key": key }), peer))?;
    if json_out {
        ui::print_json(&v)?;
    } else if v["found"] == true {
        let value = &v["entry"]["value"];
        match value.as_str() {
            Some(t) => println!("{}", ui::safe_text(t)),
            None => println!("{value}"),
        }
        if let Some(c) = v["entry"]["conflicts"].as_array().filter(|c| !c.is_empty()) {
            anstream::eprintln!(
                "{}",
                ui::paint(
                    DIM,
                    format!(
                        "({} concurrent value(s) lost: {})",
                        c.len(),
                        Value::Array(c.clone())
                    )
                )
            );
        }
    } else {
        anstream::eprintln!("{}", ui::paint(DIM, format!("{key} is not set")));
    }
    if !json_out && let Some(sync) = v.get("sync").filter(|s| s.is_object()) {
        let state = if sync["in_sync"] == true {
            "in sync with here".to_string()
        } else {
            format!(
                "{} change(s) behind here, {} head(s) ahead",
                sync["changes_they_lack"], sync["heads_we_lack"]
            )
        };
        let last = sync["last_sync_ms_ago"].as_u64().map_or_else(
            || "not synced since start".into(),
            |ms| format!("last synced {:.1} s ago", ms as f64 / 1000.0),
        );
        anstream::eprintln!(
            "{}",
            ui::paint(
                DIM,
                format!(
                    "(replica on {}: {state}; {last})",
                    sync["peer"].as_str().unwrap_or("?")
                )
            )
        );
    }
    Ok(if v["found"] == true {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `loopsy ctx ls [PREFIX] [--json] [--peer P]`
pub fn ls(
    home: &Home,
    prefix: Option<&str>,
    json_out: bool,
    peer: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let s = Session::connect(home)?;
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut args = json!({ "prefix": prefix.unwrap_or(""), "limit": 1000 });
        if let Some(c) = &cursor {
            args["cursor"] = json!(c);
        }
        let v = s.call("loopsy_context_list", with_peer(args, peer))?;
        all.extend(v["entries"].as_array().cloned().unwrap_or_default());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    if json_out {
        ui::print_json(&all)?;
        return Ok(ExitCode::SUCCESS);
    }
    for e in &all {
        let value = &e["value"];
        let shown = value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_string);
        let short: String = shown.chars().take(60).collect();
        anstream::println!(
            "{}  {}  {}",
            ui::safe_line(e["key"].as_str().unwrap_or("?")),
            ui::safe_line(&short.replace('\n', "⏎")),
            ui::paint(
                DIM,
                format!(
                    "by {}",
                    ui::safe_line(e["written_by"].as_str().unwrap_or("?"))
                )
            )
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `loopsy ctx rm KEY [--peer P]`
pub fn rm(home: &Home, key: &str, peer: Option<&str>) -> anyhow::Result<ExitCode> {
    let s = Session::connect(home)?;
    let v = s.call(
        "loopsy_context_delete",
        with_peer(json!({ "key": key }), peer),
    )?;
    if v["deleted"] == true {
        anstream::println!("{} {key}", ui::paint(OK, "✓ deleted"));
    } else {
        anstream::println!("{}", ui::paint(DIM, format!("{key} was not set")));
    }
    Ok(ExitCode::SUCCESS)
}

/// `loopsy ctx export [--format json|automerge] [-o FILE]`
pub fn export(
    home: &Home,
    format: &str,
    output: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    use base64::Engine;
    use std::io::Write;
    let s = Session::connect(home)?;
    let v = s.call("loopsy_context_export", json!({ "format": format }))?;
    let bytes = if format == "automerge" {
        base64::engine::general_purpose::STANDARD
            .decode(v["data"].as_str().unwrap_or_default())
            .context("the daemon sent bad base64")?
    } else {
        let mut b = serde_json::to_vec_pretty(&v["data"])?;
        b.push(b'\n');
        b
    };
    match output {
        Some(p) => {
            std::fs::write(p, &bytes).with_context(|| format!("cannot write {}", p.display()))?;
            anstream::eprintln!(
                "{} {} keys to {}",
                ui::paint(OK, "✓ exported"),
                v["keys"],
                p.display()
            );
        }
        None => std::io::stdout().write_all(&bytes)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `loopsy ctx import FILE` (json or automerge, detected).
pub fn import(home: &Home, file: &std::path::Path) -> anyhow::Result<ExitCode> {
    use base64::Engine;
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let args = match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) if v.is_object() => json!({ "format": "json", "data": v }),
        _ => json!({
            "format": "automerge",
            "data": base64::engine::general_purpose::STANDARD.encode(&bytes),
        }),
    };
    let s = Session::connect(home)?;
    let v = s.call("loopsy_context_import", args)?;
    anstream::println!("{} {} keys now", ui::paint(OK, "✓ merged;"), v["keys"]);
    Ok(ExitCode::SUCCESS)
}

/// `loopsy ctx watch KEY`: one line per state of the key (the value, or `(unset)`), flushed
/// as it happens; the daemon blocks for us, nothing polls.
pub fn watch(home: &Home, key: &str) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let s = Session::connect(home)?;
    let show = |v: &Value| {
        let line = if v["found"] == true {
            let value = &v["entry"]["value"];
            value
                .as_str()
                .map_or_else(|| value.to_string(), |t| ui::safe_line(t).into_owned())
        } else {
            "(unset)".to_string()
        };
        println!("{line}");
        let _ = std::io::stdout().flush();
    };
    let now = s.call("loopsy_context_get", json!({ "key": key }))?;
    show(&now);
    let mut seen = now["entry"]["written_at"].as_u64().unwrap_or(0);
    loop {
        let v = s.call(
            "loopsy_context_wait",
            json!({ "key": key, "until_change_from": seen, "timeout_s": 300 }),
        )?;
        if v["changed"] == true {
            show(&v);
            seen = v["entry"]["written_at"].as_u64().unwrap_or(0);
        }
    }
}
