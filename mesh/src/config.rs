//! `config.toml`: one typed struct, loaded once — defaults → file → `LOOPSY_*` env → flags.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default mesh (libp2p) listen port. Fixed so peers can be added by `host:port`; 0 picks one.
pub const DEFAULT_MESH_PORT: u16 = 19532;
/// Default port of the optional Streamable HTTP MCP endpoint on 127.0.0.1.
pub const DEFAULT_HTTP_PORT: u16 = 19533;
/// Largest `config.toml` we read; anything bigger is not a config file.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The whole configuration. Unknown keys anywhere are an error that names file, line and key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This machine.
    pub node: NodeConfig,
    /// The libp2p mesh.
    pub mesh: MeshConfig,
    /// How peers are found.
    pub discovery: DiscoveryConfig,
    /// The optional Streamable HTTP MCP endpoint.
    pub http: HttpConfig,
    /// The audit log of tool calls.
    pub audit: AuditConfig,
    /// Limits for jobs run by `loopsy_execute`.
    pub exec: crate::exec::ExecConfig,
    /// Which paths file transfers may touch.
    pub files: crate::files::FilesConfig,
    /// Terminal sessions.
    pub sessions: SessionsConfig,
    /// The replicated context.
    pub context: ContextConfig,
    /// Messages between agents.
    pub messages: MessagesConfig,
    /// The phone relay link.
    pub relay: RelayConfig,
    /// How far other members' introductions reach.
    pub trust: TrustConfig,
    /// The daemon's own log.
    pub log: LogConfig,
}

/// `[node]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Friendly name, unique in a mesh. Default: the hostname.
    pub name: Option<String>,
}

/// `[mesh]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeshConfig {
    /// TCP port the mesh listens on (0 = any free port).
    pub listen_port: u16,
    /// Listen on loopback only instead of all interfaces.
    pub local_only: bool,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            listen_port: DEFAULT_MESH_PORT,
            local_only: false,
        }
    }
}

/// `[discovery]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// Find peers on the LAN by mDNS.
    pub mdns: bool,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self { mdns: true }
    }
}

/// `[http]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Serve MCP over Streamable HTTP on 127.0.0.1 (bearer = `loopsy key show`).
    pub enabled: bool,
    /// Its port (0 = any free port; `loopsy status` shows it).
    pub port: u16,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            port: DEFAULT_HTTP_PORT,
        }
    }
}

/// `[audit]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Rotate `logs/audit.jsonl` when it grows past this many bytes.
    pub max_bytes: u64,
    /// Rotated files to keep (`audit.jsonl.1` … `.N`).
    pub keep: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            max_bytes: 10 * 1024 * 1024,
            keep: 3,
        }
    }
}

/// `[trust]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// The most a machine introduced by a member may do here. It also never gets more than
    /// that member grants it, nor more than that member may do here. Applies at start to
    /// machines introduced before, except those whose ceiling was set here by hand.
    pub introduced_caps: Vec<crate::trust::Capability>,
    /// Most machines one member may introduce here.
    pub max_introduced_per_member: usize,
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            introduced_caps: crate::trust::Capability::ALL.to_vec(),
            max_introduced_per_member: 64,
        }
    }
}

/// `[context]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContextConfig {
    /// Largest value one key may hold, in bytes of JSON.
    pub max_value_bytes: usize,
}

impl Default for ContextConfig {
    fn default() -> Self {
        Self {
            max_value_bytes: 256 * 1024,
        }
    }
}

/// `[messages]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagesConfig {
    /// Largest message body, in bytes.
    pub max_body_bytes: usize,
    /// Most messages waiting in the outbox for all recipients together.
    pub outbox_max: usize,
    /// Most messages kept in the inbox.
    pub inbox_max: usize,
    /// Most messages from one peer kept in the inbox (so one cannot fill it for the others).
    pub inbox_max_per_peer: usize,
    /// Named groups of peers: `to = "group:NAME"` sends to each member.
    pub groups: std::collections::BTreeMap<String, Vec<String>>,
}

impl Default for MessagesConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            outbox_max: 10_000,
            inbox_max: 100_000,
            inbox_max_per_peer: 25_000,
            groups: Default::default(),
        }
    }
}

/// `[sessions]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// Bytes of raw output each session keeps for scrollback reads.
    pub scrollback_bytes: usize,
    /// Agent kinds (`claude`, `codex`, `gemini`) whose auto-approve flag may be used without
    /// asking `loopsy approve` each time.
    pub auto_approve: Vec<String>,
    /// Seconds a spare shell, started while a phone or dashboard is connected so that "new
    /// shell" opens at once, waits to be used before it ends (0: no spare shell).
    pub spare_shell_s: u64,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            scrollback_bytes: 2 * 1024 * 1024,
            auto_approve: Vec::new(),
            spare_shell_s: 600,
        }
    }
}

/// `[relay]` (the relay's URL and this device's credentials live in `relay.json`, written by
/// `loopsy relay configure`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Seconds between checks of the relay connection (kernel keepalive every heartbeat, a
    /// WebSocket ping every fourth).
    pub heartbeat_s: u64,
    /// Serve as a circuit relay (v2) for trusted peers behind NATs: for a daemon with a
    /// public address. `loopsy relay-node` turns it on for a dedicated box.
    pub serve: bool,
    /// Mesh relay nodes to reserve on when this machine is not publicly reachable, as
    /// multiaddrs ending in `/p2p/<peer id>`. Trusted peers that serve as relays are used too.
    pub nodes: Vec<String>,
    /// When serving: longest life of one relayed connection, in seconds (libp2p's default,
    /// 2 minutes, would cut control traffic; the mesh redials a circuit that ends).
    pub circuit_max_s: u64,
    /// When serving: most bytes one relayed connection may carry (0 = no limit).
    pub circuit_max_bytes: u64,
    /// When serving: most relayed connections at once.
    pub max_circuits: usize,
    /// Upgrade a relayed connection to a direct one by hole punching (DCUtR) where the NATs
    /// allow it. Off: relayed connections stay relayed (a control for tests, or a network
    /// that frowns on it).
    pub hole_punching: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            heartbeat_s: 15,
            serve: false,
            nodes: Vec::new(),
            circuit_max_s: 86_400,
            circuit_max_bytes: 0,
            max_circuits: 64,
            hole_punching: true,
        }
    }
}

/// `[log]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Log filter for the daemon (`error`, `warn`, `info`, `debug`, `trace`, or a
    /// `tracing` directive such as `loopsy_mesh=debug`).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

/// Parse a `relay.nodes` entry: a multiaddr that ends in `/p2p/<peer id>` and is not itself
/// relayed.
pub fn relay_node_addr(s: &str) -> Result<(libp2p::PeerId, libp2p::Multiaddr), String> {
    use libp2p::multiaddr::Protocol;
    let addr: libp2p::Multiaddr = s
        .parse()
        .map_err(|e| format!("{s:?} is not a multiaddr: {e}"))?;
    if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return Err(format!("{s:?} is itself a relayed address"));
    }
    match addr.iter().last() {
        Some(Protocol::P2p(id)) => Ok((id, addr)),
        _ => Err(format!(
            "{s:?} must end in /p2p/<peer id> (`loopsy status` on the relay node shows it)"
        )),
    }
}

/// Values from command-line flags; the last layer, applied over env and file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--name`
    pub name: Option<String>,
    /// `--port`
    pub mesh_port: Option<u16>,
    /// `--local-only`
    pub local_only: Option<bool>,
    /// `--http-port` (also enables the endpoint)
    pub http_port: Option<u16>,
    /// `--relay-node`
    pub relay_serve: Option<bool>,
}

/// Why a configuration could not be loaded. Every variant says where to look.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The config file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown or mistyped key.
    #[error("{}:{line}:{column}: {message}{}", path.display(), key.as_ref().map(|k| format!(" (key `{k}`)")).unwrap_or_default())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// The dotted key at fault, when known.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// An environment variable holds a value of the wrong type.
    #[error("environment variable {var}={value:?} is not valid: expected {expected}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What it should look like.
        expected: &'static str,
    },
    /// A value parsed but is not allowed.
    #[error("{field}: {message}")]
    Invalid {
        /// Dotted key.
        field: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
}

impl Config {
    /// Load `path` (missing file = defaults), then apply env and flags, then validate.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut cfg = Self::from_file(path)?;
        cfg.apply_env(|k| std::env::var(k).ok())?;
        cfg.apply_overrides(overrides);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parse a config file; a missing file gives the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let io = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(io(e)),
            Ok(m) if m.len() > MAX_CONFIG_BYTES => {
                return Err(ConfigError::Invalid {
                    field: "config.toml",
                    message: format!(
                        "{} is {} bytes; the limit is 1 MiB",
                        path.display(),
                        m.len()
                    ),
                });
            }
            Ok(_) => {}
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Self::parse(path, &text)
    }

    /// Parse config text; errors carry `path`, line, column and key.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let (line, column, key) = match e.span() {
                Some(span) => locate(text, span.start),
                None => (1, 1, None),
            };
            let message = e.message().trim().replace("unknown field", "unknown key");
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                key,
                message,
            }
        })
    }

    /// Apply `LOOPSY_*` variables, read through `get` (so tests need not touch the process env).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("LOOPSY_NAME") {
            self.node.name = Some(v);
        }
        if let Some(v) = get("LOOPSY_MESH_PORT") {
            self.mesh.listen_port = parse_env("LOOPSY_MESH_PORT", v, "a port number 0-65535")?;
        }
        if let Some(v) = get("LOOPSY_LOCAL_ONLY") {
            self.mesh.local_only = parse_bool("LOOPSY_LOCAL_ONLY", v)?;
        }
        if let Some(v) = get("LOOPSY_MDNS") {
            self.discovery.mdns = parse_bool("LOOPSY_MDNS", v)?;
        }
        if let Some(v) = get("LOOPSY_HTTP") {
            self.http.enabled = parse_bool("LOOPSY_HTTP", v)?;
        }
        if let Some(v) = get("LOOPSY_HTTP_PORT") {
            self.http.port = parse_env("LOOPSY_HTTP_PORT", v, "a port number 0-65535")?;
        }
        if let Some(v) = get("LOOPSY_RELAY_SERVE") {
            self.relay.serve = parse_bool("LOOPSY_RELAY_SERVE", v)?;
        }
        if let Some(v) = get("LOOPSY_LOG") {
            self.log.level = v;
        }
        Ok(())
    }

    /// Apply command-line flags.
    pub fn apply_overrides(&mut self, o: &Overrides) {
        if let Some(n) = &o.name {
            self.node.name = Some(n.clone());
        }
        if let Some(p) = o.mesh_port {
            self.mesh.listen_port = p;
        }
        if let Some(l) = o.local_only {
            self.mesh.local_only = l;
        }
        if let Some(p) = o.http_port {
            self.http.enabled = true;
            self.http.port = p;
        }
        if let Some(r) = o.relay_serve {
            self.relay.serve = r;
        }
    }

    /// Check values that parse but are not allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(n) = &self.node.name {
            validate_name(n).map_err(|message| ConfigError::Invalid {
                field: "node.name",
                message,
            })?;
        }
        if self.trust.max_introduced_per_member > crate::trust::MAX_PEERS {
            return Err(ConfigError::Invalid {
                field: "trust.max_introduced_per_member",
                message: format!("must be between 0 and {}", crate::trust::MAX_PEERS),
            });
        }
        if !(4096..=256 << 20).contains(&self.sessions.scrollback_bytes) {
            return Err(ConfigError::Invalid {
                field: "sessions.scrollback_bytes",
                message: "must be between 4096 and 268435456".into(),
            });
        }
        if !(16..=512 << 10).contains(&self.messages.max_body_bytes) {
            return Err(ConfigError::Invalid {
                field: "messages.max_body_bytes",
                message: "must be between 16 and 524288".into(),
            });
        }
        for (field, v) in [
            ("messages.outbox_max", self.messages.outbox_max),
            ("messages.inbox_max", self.messages.inbox_max),
            (
                "messages.inbox_max_per_peer",
                self.messages.inbox_max_per_peer,
            ),
        ] {
            if !(1..=1_000_000).contains(&v) {
                return Err(ConfigError::Invalid {
                    field,
                    message: "must be between 1 and 1000000".into(),
                });
            }
        }
        if !(16..=16 << 20).contains(&self.context.max_value_bytes) {
            return Err(ConfigError::Invalid {
                field: "context.max_value_bytes",
                message: "must be between 16 and 16777216".into(),
            });
        }
        if let Some(k) = self
            .sessions
            .auto_approve
            .iter()
            .find(|k| !["claude", "codex", "gemini"].contains(&k.as_str()))
        {
            return Err(ConfigError::Invalid {
                field: "sessions.auto_approve",
                message: format!("{k:?} has no auto-approve flag; use claude, codex or gemini"),
            });
        }
        if !(1..=300).contains(&self.relay.heartbeat_s) {
            return Err(ConfigError::Invalid {
                field: "relay.heartbeat_s",
                message: "must be between 1 and 300".into(),
            });
        }
        if !(10..=u64::from(u32::MAX)).contains(&self.relay.circuit_max_s) {
            return Err(ConfigError::Invalid {
                field: "relay.circuit_max_s",
                message: "must be between 10 and 4294967295".into(),
            });
        }
        if !(1..=10_000).contains(&self.relay.max_circuits) {
            return Err(ConfigError::Invalid {
                field: "relay.max_circuits",
                message: "must be between 1 and 10000".into(),
            });
        }
        for n in &self.relay.nodes {
            relay_node_addr(n).map_err(|message| ConfigError::Invalid {
                field: "relay.nodes",
                message,
            })?;
        }
        if self.exec.max_concurrent == 0 || self.exec.default_timeout_s == 0 {
            return Err(ConfigError::Invalid {
                field: "exec",
                message: "max_concurrent and default_timeout_s must be at least 1".into(),
            });
        }
        if self.exec.default_timeout_s > self.exec.max_timeout_s {
            return Err(ConfigError::Invalid {
                field: "exec.default_timeout_s",
                message: "must not exceed exec.max_timeout_s".into(),
            });
        }
        if self.audit.max_bytes < 4096 {
            return Err(ConfigError::Invalid {
                field: "audit.max_bytes",
                message: "must be at least 4096".into(),
            });
        }
        Ok(())
    }

    /// This node's name: the configured one, else the hostname (sanitised).
    pub fn node_name(&self) -> String {
        self.node.name.clone().unwrap_or_else(default_name)
    }
}

/// The default node name: the hostname, cut at the first dot, reduced to allowed characters.
pub fn default_name() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let short = host.split('.').next().unwrap_or_default();
    let clean: String = short
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(63)
        .collect();
    if clean.is_empty() || clean.starts_with('-') {
        "loopsy".into()
    } else {
        clean
    }
}

/// Names: 1–63 of `A-Z a-z 0-9 - _ .`, not starting with `-` or `.`.
pub fn validate_name(n: &str) -> Result<(), String> {
    let ok_chars = n
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if n.is_empty() || n.len() > 63 || !ok_chars || n.starts_with(['-', '.']) {
        return Err(format!(
            "{n:?} is not a valid name: use 1-63 letters, digits, '-', '_' or '.', not starting with '-' or '.'"
        ));
    }
    Ok(())
}

fn parse_env<T: std::str::FromStr>(
    var: &'static str,
    value: String,
    expected: &'static str,
) -> Result<T, ConfigError> {
    value.trim().parse().map_err(|_| ConfigError::Env {
        var,
        value,
        expected,
    })
}

fn parse_bool(var: &'static str, value: String) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::Env {
            var,
            value,
            expected: "true or false",
        }),
    }
}

/// 1-based line and column of byte `offset`, and the dotted key written on that line.
fn locate(text: &str, offset: usize) -> (usize, usize, Option<String>) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let line_text = text[line_start..].lines().next().unwrap_or_default();
    let section = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(['[', ']']).trim().to_string());
    let key = line_text
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty())
        .map(|k| match &section {
            Some(s) => format!("{s}.{k}"),
            None => k,
        });
    (line, column, key)
}

/// The file `loopsy init` writes: every setting, documented, with its default.
/// Only the name is set; the rest are commented-out defaults (a test keeps them true).
pub fn template(name: &str) -> String {
    let list = |v: &[&str]| {
        let quoted: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
        format!("[{}]", quoted.join(", "))
    };
    let denied = list(crate::files::DEFAULT_DENIED);
    let write_denied = list(crate::files::DEFAULT_WRITE_DENIED);
    let anywhere = list(crate::files::DEFAULT_WRITE_DENIED_ANYWHERE);
    format!(
        r#"# loopsy configuration. Precedence: defaults < this file < LOOPSY_* env < flags.
# Every setting is shown with its default; uncomment to change. Unknown keys are errors.

[node]
# Friendly name, unique in your mesh (default: the hostname). Env: LOOPSY_NAME
name = "{name}"

[mesh]
# TCP port the mesh (libp2p) listens on; 0 picks a free port. Env: LOOPSY_MESH_PORT
# listen_port = {DEFAULT_MESH_PORT}
# Listen on loopback only (no other machine can reach this node). Env: LOOPSY_LOCAL_ONLY
# local_only = false

[discovery]
# Find peers on the LAN by mDNS. Env: LOOPSY_MDNS
# mdns = true

[http]
# Also serve MCP over Streamable HTTP on 127.0.0.1, bearer = `loopsy key show`. Env: LOOPSY_HTTP
# enabled = false
# Port of that endpoint; 0 picks a free port. Env: LOOPSY_HTTP_PORT
# port = {DEFAULT_HTTP_PORT}

[audit]
# Rotate logs/audit.jsonl past this many bytes.
# max_bytes = 10485760
# Rotated files to keep.
# keep = 3

[exec]
# Jobs one caller (this machine, or each peer) may run at once.
# max_concurrent = 128
# Jobs one caller may start per minute.
# rate_per_minute = 600
# Timeout when none is given, in seconds.
# default_timeout_s = 300
# Largest timeout a caller may ask for, in seconds.
# max_timeout_s = 3600
# Output kept per stream (stdout, stderr); the rest is counted and dropped.
# output_cap_bytes = 8388608
# Finished jobs kept for status and output queries.
# keep_finished = 256
# Commands refused by name. A speed bump, not a sandbox: the real control is each peer's
# `exec` capability (loopsy peers revoke <peer> exec).
# denylist = ["mkfs", "format", "shutdown", "reboot", "halt", "poweroff"]

[files]
# Roots transfers may read or write under ("~" is this user's home). Checked on both ends,
# after resolving symlinks and "..".
# allowed_paths = ["~"]
# Never read or written, even under an allowed root: credential stores (and loopsy's own
# data dir, wherever it is).
# denied_paths = {denied}
# Never written (reading is fine): files something runs or obeys later, so writing them is
# running code here: shell start-up files, service and autostart dirs, agents' settings and
# hooks, editors' and git's configs (and loopsy's own program). `loopsy doctor` warns when
# one of these is taken out.
# write_denied_paths = {write_denied}
# Path endings never written wherever they are (repositories' hooks, projects' agent
# settings).
# write_denied_anywhere = {anywhere}
# Never write into a directory of PATH under the home directory (~/.local/bin, ~/.cargo/bin…).
# deny_writes_to_path_dirs = true
# Write large received files straight to the disk (direct I/O), past the page cache, where
# the file system supports it (elsewhere they go through the cache).
# direct_io = true

[sessions]
# Raw output each terminal session keeps for scrollback reads, in bytes (per session).
# scrollback_bytes = 2097152
# Agent kinds allowed to skip their permission prompts without `loopsy approve` each time:
# claude (--dangerously-skip-permissions), codex, gemini. Off for all by default.
# auto_approve = []
# While a phone or the dashboard is connected, one shell is kept started ahead of use so a
# new shell opens at its prompt; unused, it ends after this many seconds (0: no spare).
# spare_shell_s = 600

[trust]
# The most a machine introduced by a member may do here (it also never gets more than that
# member grants it, nor more than that member may do here). Paired machines get everything:
# exec, pty, files-read, files-write, context, messages, introduce. A change reaches machines
# introduced before it at the next start (not those you granted or revoked by hand).
# introduced_caps = ["exec", "pty", "files-read", "files-write", "context", "messages", "introduce"]
# Most machines one member may introduce here.
# max_introduced_per_member = 64

[context]
# Largest value one context key may hold, in bytes of JSON (keys are at most 512 bytes).
# max_value_bytes = 262144

[messages]
# Largest message body, in bytes.
# max_body_bytes = 65536
# Messages waiting for offline or slow peers, all together; a send beyond it is refused.
# outbox_max = 10000
# Messages kept in the inbox; beyond it senders are asked to retry later.
# inbox_max = 100000
# Messages from one peer kept in the inbox, so that one peer cannot fill it for the others.
# inbox_max_per_peer = 25000

# [messages.groups]
# Named groups of peers: `loopsy msg send group:reviewers …` sends to each member.
# Example: reviewers = ["kai", "leo"]

[relay]
# How often the phone relay's connection is checked, in seconds (1-300): the kernel probes it
# every heartbeat, the daemon pings every fourth; a dead connection is re-opened. The relay
# URL is set by `loopsy relay configure`.
# heartbeat_s = 15
# Mesh relay (circuit relay v2, for peers behind NATs; not the phone relay above).
# Serve as a relay for trusted peers (a daemon with a public address). Env: LOOPSY_RELAY_SERVE
# serve = false
# Relay nodes to reserve on when this machine is not publicly reachable (multiaddrs ending in
# /p2p/<peer id>; pair with them first). Trusted peers that serve as relays are used too.
# Example: nodes = ["/ip4/203.0.113.7/tcp/19532/p2p/12D3KooW..."]
# nodes = []
# Upgrade a relayed connection to a direct one by hole punching (DCUtR) where the NATs allow.
# hole_punching = true
# When serving: longest life of one relayed connection in seconds, most bytes it may carry
# (zero: no limit), most relayed connections at once.
# circuit_max_s = 86400
# circuit_max_bytes = 0
# max_circuits = 64

[log]
# Daemon log filter: error, warn, info, debug, trace, or a directive like "loopsy_mesh=debug".
# Env: LOOPSY_LOG
# level = "info"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("/h/config.toml")
    }

    #[test]
    fn template_documents_exactly_the_defaults() -> Result<(), ConfigError> {
        // Uncomment every `# key = value` line: the result must equal the defaults.
        let text = template("kai");
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.contains(" = ") && !rest.contains(':') => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let cfg = Config::parse(p(), &uncommented)?;
        let mut want = Config::default();
        want.node.name = Some("kai".into());
        assert_eq!(cfg, want);
        // And every field of the struct appears in the template.
        let ser = toml::to_string(&want).map_err(|e| ConfigError::Invalid {
            field: "test",
            message: e.to_string(),
        })?;
        for line in ser.lines().filter(|l| l.contains(" = ")) {
            let key = line.split(" = ").next().unwrap_or_default();
            assert!(
                uncommented.contains(&format!("{key} = ")),
                "{key} undocumented"
            );
        }
        Ok(())
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = "[node]\nname = \"a\"\n\n[mesh]\nlisten_prot = 5\n";
        let err = Config::parse(p(), text).err().map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(err.starts_with("/h/config.toml:5:1:"), "{err}");
        assert!(err.contains("unknown key `listen_prot`"), "{err}");
        assert!(err.contains("mesh.listen_prot"), "{err}");
    }

    #[test]
    fn wrong_type_and_garbage_are_located() {
        let err = Config::parse(p(), "[mesh]\nlisten_port = \"x\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains(":2:") && err.contains("mesh.listen_port"),
            "{err}"
        );
        let err = Config::parse(p(), "[mesh\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("/h/config.toml:1:"), "{err}");
    }

    #[test]
    fn layering_defaults_file_env_flags() -> Result<(), ConfigError> {
        let mut cfg = Config::parse(p(), "[mesh]\nlisten_port = 1000\n")?;
        assert_eq!(cfg.mesh.listen_port, 1000);
        cfg.apply_env(|k| match k {
            "LOOPSY_MESH_PORT" => Some("2000".into()),
            "LOOPSY_LOCAL_ONLY" => Some("yes".into()),
            _ => None,
        })?;
        assert_eq!(cfg.mesh.listen_port, 2000);
        assert!(cfg.mesh.local_only);
        cfg.apply_overrides(&Overrides {
            mesh_port: Some(0),
            ..Default::default()
        });
        assert_eq!(cfg.mesh.listen_port, 0);
        Ok(())
    }

    #[test]
    fn bad_env_and_names_are_refused() {
        let mut cfg = Config::default();
        let e = cfg.apply_env(|k| (k == "LOOPSY_MESH_PORT").then(|| "70000".to_string()));
        assert!(matches!(
            e,
            Err(ConfigError::Env {
                var: "LOOPSY_MESH_PORT",
                ..
            })
        ));
        for bad in ["", "-x", "a b", "a/b", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        for good in ["kai", "mac-mini_2", "a.b"] {
            assert!(validate_name(good).is_ok(), "{good:?}");
        }
        assert!(validate_name(&default_name()).is_ok());
    }
}
