//! `loopsy msg send|inbox|wait|ack|status`: messages between machines from the command line.

use std::process::ExitCode;

use loopsy_mesh::Home;
use serde_json::{Value, json};

use crate::client::Session;
use crate::ui::{self, BOLD, DIM, OK, WARN};

/// What `loopsy msg send` takes.
pub struct SendOpts<'a> {
    pub to: &'a str,
    pub body: &'a str,
    pub kind: Option<&'a str>,
    pub reply_to: Option<&'a str>,
    pub thread: Option<&'a str>,
    pub ttl: Option<u64>,
    pub wait: u64,
    pub json: bool,
}

fn status_line(r: &Value) -> String {
    let st = r["status"].as_str().unwrap_or("?");
    let style = match st {
        "delivered" | "read" => OK,
        "pending" => WARN,
        _ => ui::BAD,
    };
    let mut line = format!(
        "{} {}",
        r["to"].as_str().unwrap_or("?"),
        ui::paint(style, st)
    );
    if let Some(e) = r["last_error"].as_str() {
        line.push_str(&ui::paint(DIM, format!(" ({e})")));
    }
    line
}

/// `loopsy msg send TO BODY`
pub fn send(home: &Home, o: &SendOpts<'_>) -> anyhow::Result<ExitCode> {
    let mut args = json!({ "to": o.to, "body": o.body, "wait_s": o.wait });
    for (k, v) in [
        ("type", o.kind),
        ("reply_to", o.reply_to),
        ("thread", o.thread),
    ] {
        if let Some(v) = v {
            args[k] = json!(v);
        }
    }
    if let Some(t) = o.ttl {
        args["ttl_s"] = json!(t);
    }
    let s = Session::connect(home)?;
    let v = s.call("loopsy_send_message", args)?;
    if o.json {
        ui::print_json(&v)?;
    } else {
        anstream::println!("{}", v["id"].as_str().unwrap_or("?"));
        for r in v["recipients"].as_array().into_iter().flatten() {
            anstream::eprintln!("  {}", status_line(r));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_message(m: &Value) {
    let kind = m["type"].as_str().unwrap_or("?");
    let mut head = format!(
        "{} {} {}",
        ui::paint(BOLD, ui::safe_line(m["from_name"].as_str().unwrap_or("?"))),
        ui::paint(DIM, format!("[{}]", ui::safe_line(kind))),
        ui::paint(DIM, ui::safe_line(m["id"].as_str().unwrap_or("?")))
    );
    if let Some(t) = m["thread"].as_str() {
        head.push_str(&ui::paint(DIM, format!(" thread={}", ui::safe_line(t))));
    }
    if let Some(r) = m["reply_to"].as_str() {
        head.push_str(&ui::paint(DIM, format!(" reply-to={}", ui::safe_line(r))));
    }
    anstream::println!("{head}");
    // Not through anstream, which would strip escape sequences from `--raw` text when
    // colour is off: the body is escaped here unless the user asked for it raw.
    println!("{}", ui::safe_text(m["body"].as_str().unwrap_or("")));
}

/// `loopsy msg inbox`
pub fn inbox(
    home: &Home,
    all: bool,
    from: Option<&str>,
    thread: Option<&str>,
    limit: usize,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let mut args = json!({ "unread_only": !all, "limit": limit });
    if let Some(f) = from {
        args["from"] = json!(f);
    }
    if let Some(t) = thread {
        args["thread"] = json!(t);
    }
    let s = Session::connect(home)?;
    let v = s.call("loopsy_check_inbox", args)?;
    if json_out {
        ui::print_json(&v["messages"])?;
        return Ok(ExitCode::SUCCESS);
    }
    let msgs = v["messages"].as_array().cloned().unwrap_or_default();
    if msgs.is_empty() {
        anstream::eprintln!("{}", ui::paint(DIM, "no messages"));
    }
    for (i, m) in msgs.iter().enumerate() {
        if i > 0 {
            anstream::println!();
        }
        print_message(m);
    }
    Ok(ExitCode::SUCCESS)
}

/// `loopsy msg wait`
pub fn wait(
    home: &Home,
    from: Option<&str>,
    thread: Option<&str>,
    timeout: u64,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let mut args = json!({ "timeout_s": timeout });
    if let Some(f) = from {
        args["from"] = json!(f);
    }
    if let Some(t) = thread {
        args["thread"] = json!(t);
    }
    let s = Session::connect(home)?;
    let v = s.call("loopsy_wait_for_message", args)?;
    let m = &v["message"];
    if m.is_null() {
        anstream::eprintln!(
            "{}",
            ui::paint(DIM, format!("no message within {timeout} s"))
        );
        return Ok(ExitCode::FAILURE);
    }
    if json_out {
        ui::print_json(m)?;
    } else {
        print_message(m);
    }
    Ok(ExitCode::SUCCESS)
}

/// `loopsy msg ack ID`
pub fn ack(home: &Home, id: &str) -> anyhow::Result<ExitCode> {
    let s = Session::connect(home)?;
    let v = s.call("loopsy_ack_message", json!({ "id": id }))?;
    anstream::println!(
        "{} {id} ({} gets a read receipt)",
        ui::paint(OK, "✓ read"),
        ui::safe_line(v["from_name"].as_str().unwrap_or("the sender"))
    );
    Ok(ExitCode::SUCCESS)
}

/// `loopsy msg status [ID] [--peer P]`
pub fn status(
    home: &Home,
    id: Option<&str>,
    peer: Option<&str>,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let mut args = json!({});
    if let Some(i) = id {
        args["id"] = json!(i);
    }
    if let Some(p) = peer {
        args["peer"] = json!(p);
    }
    let s = Session::connect(home)?;
    let v = s.call("loopsy_check_ack", args)?;
    if json_out {
        ui::print_json(&v["messages"])?;
        return Ok(ExitCode::SUCCESS);
    }
    for r in v["messages"].as_array().into_iter().flatten() {
        anstream::println!(
            "{} {}",
            ui::paint(DIM, r["id"].as_str().unwrap_or("?")),
            status_line(r)
        );
    }
    Ok(ExitCode::SUCCESS)
}
