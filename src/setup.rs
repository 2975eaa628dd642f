//! `loopsy init` and `loopsy key`: creating and maintaining the data dir's secrets.

use anyhow::{Context, bail};
use loopsy_mcp::control::Verb;
use loopsy_mesh::config::{self, Config};
use loopsy_mesh::{Home, Identity, token};
use serde::Serialize;

use crate::ui::{self, BOLD, DIM, OK};

/// What `init` found or made.
#[derive(Debug, Serialize)]
pub struct InitReport {
    /// The node's name.
    pub name: String,
    /// The node's PeerId.
    pub peer_id: String,
    /// The data dir.
    pub data_dir: String,
    /// Whether anything was created.
    pub created: bool,
}

/// Create whatever is missing (never replacing an identity unless `force`).
pub fn ensure(home: &Home, name: Option<&str>, force: bool) -> anyhow::Result<InitReport> {
    home.check_socket_path().map_err(anyhow::Error::msg)?;
    home.ensure_dirs()
        .with_context(|| format!("cannot create {}", home.root().display()))?;
    let mut created = false;

    if let Some(n) = name {
        config::validate_name(n).map_err(anyhow::Error::msg)?;
    }
    let cfg_path = home.config();
    if !cfg_path.exists() || force {
        let n = name
            .map(str::to_string)
            .unwrap_or_else(config::default_name);
        loopsy_mesh::fsutil::atomic_write(&cfg_path, config::template(&n).as_bytes(), 0o600)
            .with_context(|| format!("cannot write {}", cfg_path.display()))?;
        created = true;
    }
    let cfg = Config::from_file(&cfg_path)?;
    if let Some(n) = name
        && cfg.node.name.as_deref() != Some(n)
    {
        bail!(
            "{} already names this node {:?}; edit node.name there (or use `loopsy init --force`, which also replaces the identity)",
            cfg_path.display(),
            cfg.node_name()
        );
    }

    let id_path = home.identity();
    let identity = if id_path.exists() && !force {
        Identity::load(&id_path)?
    } else {
        let id = Identity::generate();
        id.save(&id_path)?;
        created = true;
        id
    };

    let tok_path = home.token();
    if !tok_path.exists() || force {
        token::write(&tok_path, &token::generate())
            .with_context(|| format!("cannot write {}", tok_path.display()))?;
        created = true;
    }

    Ok(InitReport {
        name: cfg.node_name(),
        peer_id: identity.peer_id().to_string(),
        data_dir: home.root().display().to_string(),
        created,
    })
}

/// `loopsy init`
pub fn init(home: &Home, name: Option<&str>, force: bool, json: bool) -> anyhow::Result<()> {
    if force && crate::lifecycle::probe(home).is_ok() {
        bail!("the daemon is running; `loopsy stop` before replacing its identity");
    }
    let r = ensure(home, name, force)?;
    if json {
        return ui::print_json(&r);
    }
    let what = if r.created {
        "initialized"
    } else {
        "already initialized"
    };
    anstream::println!("{} {}", ui::paint(OK, "✓"), what);
    anstream::println!("  name     {}", ui::paint(BOLD, &r.name));
    anstream::println!("  peer id  {}", r.peer_id);
    anstream::println!("  data dir {}", ui::paint(DIM, &r.data_dir));
    if r.created {
        anstream::println!("next: `loopsy start`, then `loopsy status`");
    }
    Ok(())
}

/// `loopsy key show`
pub fn key_show(home: &Home) -> anyhow::Result<()> {
    let t = token::read(&home.token()).map_err(anyhow::Error::msg)?;
    anstream::println!("{t}");
    Ok(())
}

/// `loopsy key rotate`
pub fn key_rotate(home: &Home) -> anyhow::Result<()> {
    if !home.token().exists() {
        bail!(
            "{} does not exist; run `loopsy init`",
            home.token().display()
        );
    }
    let new = token::generate();
    token::write(&home.token(), &new)
        .with_context(|| format!("cannot write {}", home.token().display()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match rt.block_on(loopsy_mcp::client::request(&home.socket(), Verb::ReloadKey)) {
        Ok(_) => anstream::eprintln!(
            "{} rotated; the running daemon now accepts only the new token",
            ui::paint(OK, "✓")
        ),
        Err(loopsy_mcp::client::ClientError::NotRunning(_)) => {
            anstream::eprintln!("{} rotated (the daemon is not running)", ui::paint(OK, "✓"))
        }
        Err(e) => bail!(
            "the token file was rotated but the daemon did not reload it: {e}; run `loopsy restart`"
        ),
    }
    anstream::println!("{new}");
    Ok(())
}
