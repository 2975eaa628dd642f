//! `loopsy daemon`: assembles the long-lived process — lock, config, identity, mesh node,
//! audit log, HTTP endpoint, control socket — and tears it down in reverse order.

use anyhow::Context;
use loopsy_mcp::ctx::CancellationToken;
use loopsy_mcp::{AuditLog, DaemonCtx};
use loopsy_mesh::behaviour::RelayServe;
use loopsy_mesh::exec::JobManager;
use loopsy_mesh::files::PathPolicy;
use loopsy_mesh::node::{self, NodeConfig};
use loopsy_mesh::{ApiToken, Config, Home, Identity, PidLock};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use crate::cli::DaemonArgs;

/// Run the daemon until asked to stop.
pub fn run(home: &Home, args: &DaemonArgs) -> anyhow::Result<()> {
    run_with(home, args, true)
}

/// Run with the flags the daemon last started with, leaving them recorded as they are (the
/// service managers' units run this).
pub fn run_recorded(home: &Home) -> anyhow::Result<()> {
    run_with(home, &crate::lifecycle::remembered_flags(home), false)
}

fn run_with(home: &Home, args: &DaemonArgs, record: bool) -> anyhow::Result<()> {
    crate::setup::ensure(home, None, false)?;
    let cfg = Config::load(&home.config(), &args.overrides())?;
    let filter = EnvFilter::try_new(&cfg.log.level)
        .with_context(|| format!("log.level {:?} is not a valid filter", cfg.log.level))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let lock = PidLock::acquire(&home.pidfile())?;
    if record {
        crate::lifecycle::remember_flags(home, args);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(serve(home, &cfg));
    if let Err(e) = &result {
        tracing::error!("daemon failed: {e:#}");
    }
    drop(lock);
    result
}

async fn serve(home: &Home, cfg: &Config) -> anyhow::Result<()> {
    let identity = Identity::load(&home.identity())?;
    let token = ApiToken::load(&home.token()).map_err(anyhow::Error::msg)?;
    let name = cfg.node_name();
    let node_cfg = NodeConfig {
        name: name.clone(),
        port: cfg.mesh.listen_port,
        local_only: cfg.mesh.local_only,
        mdns: cfg.discovery.mdns,
        trust_path: home.trust(),
        trust: cfg.trust.clone(),
        relay_serve: cfg.relay.serve.then(|| RelayServe {
            circuit_max: std::time::Duration::from_secs(cfg.relay.circuit_max_s),
            circuit_max_bytes: cfg.relay.circuit_max_bytes,
            max_circuits: cfg.relay.max_circuits,
        }),
        relay_nodes: cfg
            .relay
            .nodes
            .iter()
            .filter_map(|n| loopsy_mesh::config::relay_node_addr(n).ok())
            .collect(),
        hole_punching: cfg.relay.hole_punching,
    };
    let (node, inbound) = node::spawn(&identity, node_cfg).await?;
    let jobs = JobManager::new(cfg.exec.clone());
    let audit = AuditLog::spawn(home.audit_log(), cfg.audit.max_bytes, cfg.audit.keep);
    // The data dir (secrets, trust) is never a transfer target, wherever LOOPSY_HOME points.
    let mut files_cfg = cfg.files.clone();
    files_cfg
        .denied_paths
        .push(home.root().display().to_string());
    // Nor is loopsy's own program (a peer replacing it would run at the next start).
    if let Ok(exe) = std::env::current_exe() {
        files_cfg.write_denied_paths.push(exe.display().to_string());
    }
    let user_home = loopsy_sys::home_dir().unwrap_or_else(|| "/".into());
    let files = PathPolicy::new(&files_cfg, &user_home);
    let context = loopsy_mesh::context::ContextHandle::open(
        &home.root().join("context"),
        loopsy_mesh::context::ContextConfig {
            max_value_bytes: cfg.context.max_value_bytes,
            actor: Some(identity.peer_id().to_bytes()),
        },
    )
    .context("cannot open the context store")?;
    let messages = loopsy_mesh::msg::MsgHandle::open(
        &home.root().join("messages"),
        loopsy_mesh::msg::MsgConfig {
            max_body_bytes: cfg.messages.max_body_bytes,
            outbox_max: cfg.messages.outbox_max,
            inbox_max: cfg.messages.inbox_max,
            inbox_max_per_peer: cfg.messages.inbox_max_per_peer,
            groups: cfg.messages.groups.clone(),
        },
        identity.keypair().clone(),
    )
    .context("cannot open the message store")?;
    let tasks = loopsy_mesh::task::TaskHandle::open(
        &home.root().join("tasks"),
        identity.peer_id().to_string(),
    )
    .context("cannot open the task store")?;
    // Session hosts are this same binary (hidden `session-host` subcommand); live ones from
    // before a restart are found again through their records under sessions/.
    let exe = std::env::current_exe().context("cannot locate the loopsy binary")?;
    let sessions = loopsy_term::Manager::new(home.sessions(), exe, cfg.sessions.scrollback_bytes)
        .with_auto_approve(cfg.sessions.auto_approve.clone())
        .with_spares(cfg.sessions.spare_shell_s);
    let ctx = DaemonCtx::new(
        name.clone(),
        home.clone(),
        node.clone(),
        jobs.clone(),
        files.clone(),
        audit.clone(),
        token,
        sessions,
        context,
        messages,
        tasks,
    );
    // The phone relay link (idle until `loopsy relay configure` has run).
    let phones = loopsy_mcp::phone::PhoneHub::open(
        home,
        std::time::Duration::from_secs(cfg.relay.heartbeat_s),
    )
    .map_err(anyhow::Error::msg)
    .context("cannot load the phone relay settings")?;
    ctx.set_phones(phones.clone());
    phones.spawn(ctx.clone()).map_err(anyhow::Error::msg)?;
    tokio::spawn(loopsy_mcp::tools::remote::serve(ctx.clone(), inbound));
    tokio::spawn(loopsy_mcp::attach::serve(ctx.clone()));
    tokio::spawn(loopsy_mcp::exec_pipe::serve(ctx.clone()));
    tokio::spawn(loopsy_mesh::context::sync::serve(
        node.clone(),
        ctx.context().clone(),
    ));
    tokio::spawn(loopsy_mesh::context::sync::replicate(
        node.clone(),
        ctx.context().clone(),
    ));
    loopsy_mesh::msg::deliver::start(node.clone(), ctx.messages().clone());
    tokio::spawn(loopsy_mesh::files::serve(
        node.streams(),
        node.clone(),
        files,
    ));

    if cfg.http.enabled {
        let addr = loopsy_mcp::http::spawn(ctx.clone(), cfg.http.port)
            .await
            .with_context(|| format!("cannot serve HTTP MCP on 127.0.0.1:{}", cfg.http.port))?;
        ctx.set_http_addr(addr);
    }

    // The socket comes last: once it answers, everything behind it is ready.
    let listener = loopsy_mcp::listener::bind(&home.socket()).await?;
    info!(
        %name, peer_id = %identity.peer_id(), version = loopsy_mesh::VERSION,
        pid = std::process::id(), "loopsy daemon ready"
    );

    let stop = ctx.shutdown_token().clone();
    tokio::spawn(watch_signals(stop.clone()));
    // Once start-up's burst is over (listeners, first dials, mDNS probes), and then once a
    // minute, the resident pages of code that ran once and not since go back: start-up's,
    // then each CLI call's. What runs all the time (pings, timers) is mapped again at its
    // next run, from the file cache: a few hundred minor faults a minute.
    tokio::spawn(loopsy_sys::memory::keep_code_pages_released(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_secs(60),
    ));
    loopsy_mcp::listener::serve(listener, ctx.clone()).await;

    info!("shutting down");
    if let Err(e) = loopsy_sys::ipc::remove(&home.socket()) {
        warn!(error = %e, "cannot remove the control socket");
    }
    jobs.kill_all();
    node.shutdown().await;
    audit.flush().await;
    info!("stopped");
    Ok(())
}

async fn watch_signals(stop: CancellationToken) {
    // A closed terminal must not take the daemon with it: hang-ups are ignored there.
    let mut signals = match loopsy_sys::signal::shutdown() {
        Ok(s) => s,
        Err(e) => {
            warn!("cannot install signal handlers: {e}");
            return;
        }
    };
    let name = signals.recv().await;
    info!("{name}");
    stop.cancel();
}
