//! The command line: every subcommand and flag (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use clap_complete::Shell;

/// loopsy: a mesh for your terminals and AI coding agents across machines.
#[derive(Debug, Parser)]
#[command(name = "loopsy", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Data dir (default: $LOOPSY_HOME, else ~/.loopsy).
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// Print what peers sent (message bodies, context values, names) as it is, control
    /// characters included (by default they are shown escaped, as `\x1b`).
    #[arg(long, global = true)]
    pub raw: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the data dir: config.toml, this machine's identity and the local API token.
    Init(InitArgs),
    /// Start the daemon in the background (initializing first if needed).
    Start(StartArgs),
    /// Start the daemon as a relay node for the mesh: a box with a public address that trusted
    /// peers behind NATs reserve on and reach each other through (`start --relay-node`).
    /// Pair each machine with it once (`loopsy pair` here, `loopsy pair <addr>` there).
    RelayNode(StartArgs),
    /// Ask the running daemon to shut down, and wait until it has.
    Stop,
    /// Stop, then start. Without flags, with the flags the daemon last started with (so a
    /// `--local-only` daemon stays local-only); with flags, with those instead.
    Restart(DaemonArgs),
    /// Show this node: name, PeerId, version, pid, listen addresses.
    Status(JsonFlag),
    /// Show the daemon's log (or the audit log of tool calls).
    Logs(LogsArgs),
    /// Check config, permissions, identity, socket and daemon; say how to fix each problem.
    Doctor(DoctorArgs),
    /// Run the daemon at login (systemd user unit / launchd agent / Task Scheduler).
    Enable(ServiceArgs),
    /// Remove what `enable` installed.
    Disable(ServiceArgs),
    /// Pair with another machine: without ADDR, show a one-time code and wait; with ADDR,
    /// enter the code the other machine shows.
    Pair(PairArgs),
    /// The machines this one trusts.
    #[command(subcommand)]
    Peers(PeersCommand),
    /// Run a command on a peer as ssh does: output, stdin, Ctrl-C and exit status pass through (`loopsy exec kai -- make test`).
    Exec(ExecArgs),
    /// Copy a file to or from a peer: `loopsy cp build.tar kai:~/in/` … `loopsy cp kai:~/log.txt .`
    Cp(CpArgs),
    /// List a directory on a peer: `loopsy ls kai:~/src`.
    Ls(LsArgs),
    /// The mesh at a glance.
    #[command(subcommand)]
    Mesh(MeshCommand),
    /// The shared context: `loopsy ctx set build/status green`, `get`, `ls`, `rm`.
    #[command(subcommand)]
    Ctx(CtxCommand),
    /// Messages between machines' agents: `loopsy msg send kai "build is green"`, `inbox`,
    /// `wait`, `ack`, `status`.
    #[command(subcommand)]
    Msg(MsgCommand),
    /// The phone relay (your own Cloudflare Worker): `configure <url>`, `status`, `deploy`, `dev`.
    #[command(subcommand)]
    Relay(RelayCommand),
    /// Your phone: `loopsy mobile pair` shows a QR code and a short code to type on the phone.
    #[command(subcommand)]
    Mobile(MobileCommand),
    /// The phones this laptop trusts: `list`, `revoke <id>`.
    #[command(subcommand)]
    Phone(PhoneCommand),
    /// Open the local dashboard (the phone app, served by the daemon on 127.0.0.1): sessions,
    /// peers, messages and context in a browser on this machine.
    Dashboard {
        /// Print the link instead of opening a browser.
        #[arg(long)]
        no_open: bool,
        /// Print the link as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Terminal sessions here (or on a peer): `loopsy sessions`, `--json`.
    Sessions(SessionsArgs),
    /// Start a shell (or `-- cmd args…`) in a new session, here or on --peer, and attach to it.
    Shell(ShellArgs),
    /// Attach this terminal to a running session (detach with Ctrl-]).
    Attach {
        /// Session id or name.
        session: String,
        /// The peer it runs on.
        #[arg(long)]
        peer: Option<String>,
    },
    /// Confirm an agent's request to start an agent with its skip-permissions flag
    /// (without ID: list the pending requests).
    Approve {
        /// The request id the agent was given.
        id: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// End a session's program (it stays listed until removed with --rm).
    Kill {
        /// Session id or name (the exact id with --rm).
        session: String,
        /// Also forget the session (its record, final screen and scrollback).
        #[arg(long)]
        rm: bool,
        /// The peer it runs on.
        #[arg(long)]
        peer: Option<String>,
    },
    /// MCP server on stdio for agents: bridges to the daemon, starting it if needed.
    /// `loopsy mcp install` registers it with your agents; `uninstall` removes it.
    Mcp {
        /// install or uninstall (none: serve MCP on stdio).
        #[command(subcommand)]
        action: Option<McpAction>,
    },
    /// The local API token (bearer for the HTTP MCP endpoint).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print shell completions.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: Shell,
    },
    /// Run the daemon in the foreground (what `start` launches).
    #[command(hide = true)]
    Daemon(DaemonRunArgs),
    /// Own one session's PTY (what the daemon launches per session).
    #[command(hide = true)]
    SessionHost {
        /// The sessions directory.
        #[arg(long)]
        sessions: std::path::PathBuf,
        /// The session id.
        #[arg(long)]
        id: String,
    },
}

/// `loopsy relay`
#[derive(Debug, Subcommand)]
pub enum RelayCommand {
    /// Register this laptop with a relay and connect to it (phones paired with an earlier
    /// relay must pair again).
    Configure {
        /// The relay's base URL (https://…; http:// only for a relay on this machine).
        url: String,
        /// Read the relay's registration secret from stdin (one line). Also read from
        /// LOOPSY_RELAY_REGISTRATION_SECRET. Never given as an argument.
        #[arg(long)]
        registration_secret_stdin: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The relay link: connected or not, and why.
    Status(JsonFlag),
    /// Build the relay Worker and deploy it to your Cloudflare account with wrangler, set its
    /// pair-token secret (through stdin), and configure this laptop to use it.
    Deploy {
        /// Worker name (default: loopsy-relay).
        #[arg(long, default_value = "loopsy-relay")]
        name: String,
        /// A custom domain for the Worker (it must be on your Cloudflare account).
        #[arg(long)]
        domain: Option<String>,
        /// Build the bundle into DIR and stop (no account needed).
        #[arg(long, value_name = "DIR")]
        dry_run: Option<PathBuf>,
    },
    /// Run the relay Worker on this machine under `wrangler dev` (to try the phone app
    /// without a Cloudflare account); stops with Ctrl-C.
    Dev {
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 8787)]
        port: u16,
        /// Listen on all interfaces (so a phone on the LAN can reach it).
        #[arg(long)]
        lan: bool,
    },
}

/// `loopsy mobile`
#[derive(Debug, Subcommand)]
pub enum MobileCommand {
    /// Show a QR code (a link to your relay's app) and a short code: scan it with the phone,
    /// then type the code there. The code is checked by this laptop, not the relay.
    Pair {
        /// Seconds the link and code stay valid (30 to 3600).
        #[arg(long, default_value_t = 300)]
        ttl: u64,
        /// Machine-readable output (link, code, expiry).
        #[arg(long)]
        json: bool,
    },
}

/// `loopsy phone`
#[derive(Debug, Subcommand)]
pub enum PhoneCommand {
    /// The phones this laptop trusts.
    List(JsonFlag),
    /// Revoke a phone: it can no longer connect (this laptop's list decides, whatever the
    /// relay does), and the relay closes its connections.
    Revoke {
        /// The phone's id from `loopsy phone list`.
        id: String,
    },
}

/// `loopsy sessions`
#[derive(Debug, clap::Args)]
pub struct SessionsArgs {
    /// List the sessions on this peer instead.
    #[arg(long)]
    pub peer: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `loopsy shell`
#[derive(Debug, clap::Args)]
pub struct ShellArgs {
    /// Start it on this peer instead (it needs the pty capability there).
    #[arg(long)]
    pub peer: Option<String>,
    /// Name the session (default: shell-xxxx or custom-xxxx).
    #[arg(long)]
    pub name: Option<String>,
    /// Start it without attaching; print its id.
    #[arg(long, short)]
    pub detached: bool,
    /// The program and its arguments (default: your shell).
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// `pair`
#[derive(Debug, Args)]
pub struct PairArgs {
    /// The other machine's address as its `loopsy pair` printed it, or just its PeerId when
    /// both are on the same LAN (mDNS).
    pub addr: Option<String>,
    /// The code (else read from stdin).
    #[arg(long, requires = "addr")]
    pub code: Option<String>,
    /// Seconds the code stays valid.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ttl: u64,
    /// Machine-readable output (one JSON line with the code, one when paired).
    #[arg(long)]
    pub json: bool,
}

/// `peers`
#[derive(Debug, Subcommand)]
pub enum PeersCommand {
    /// List trusted peers and their state.
    List(JsonFlag),
    /// Dial a peer mDNS cannot see (multiaddr or host:port).
    Add {
        /// Address.
        addr: String,
    },
    /// Remove a machine from the mesh: cut it off here now, and every member drops it too
    /// (a signed removal members pass on; those offline apply it when they return).
    Remove {
        /// Name or PeerId.
        peer: String,
        /// Forget it on this machine only.
        #[arg(long)]
        here_only: bool,
    },
    /// Rename a peer.
    Rename {
        /// Name or PeerId.
        peer: String,
        /// New name.
        name: String,
    },
    /// Allow a peer to do more: exec, pty, files-read, files-write, context, messages,
    /// introduce.
    Grant {
        /// Name or PeerId.
        peer: String,
        /// Capabilities.
        #[arg(required = true)]
        caps: Vec<String>,
    },
    /// Take capabilities away from a peer (effective on its next call).
    Revoke {
        /// Name or PeerId.
        peer: String,
        /// Capabilities.
        #[arg(required = true)]
        caps: Vec<String>,
    },
}

/// `exec`
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Peer name or PeerId (this machine's own name runs it here).
    pub peer: String,
    /// Kill it (its whole process group) after this many seconds (default: never).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Working directory on the peer (`~` is its home; default: its home).
    #[arg(long)]
    pub cwd: Option<String>,
    /// Send no stdin (the command reads EOF), as `ssh -n`; by default stdin is forwarded.
    #[arg(short = 'n', long = "no-stdin")]
    pub no_stdin: bool,
    /// Say which job runs it (its id on the peer) on stderr.
    #[arg(short, long)]
    pub verbose: bool,
    /// Run it in a terminal (PTY) on the peer, attached to this one, for interactive
    /// programs (as `ssh -t`); Ctrl-] detaches and leaves it running as a session.
    #[arg(short = 't', long = "tty", conflicts_with_all = ["no_stdin", "timeout"])]
    pub tty: bool,
    /// The command: one argument is a command line for the peer's shell (as with ssh);
    /// several are a program and its arguments, run without a shell.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// `cp`
#[derive(Debug, Args)]
pub struct CpArgs {
    /// Source: a local path, or PEER:PATH.
    pub source: String,
    /// Destination: PEER:PATH, or a local path (a directory keeps the source's file name).
    pub dest: String,
    /// Replace an existing destination file.
    #[arg(long)]
    pub overwrite: bool,
    /// Do not keep the source's mode and modification time (by default both are kept, as
    /// `scp -p` does); the copy gets an ordinary file's mode and the time of the copy.
    #[arg(long)]
    pub no_preserve: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `ls`
#[derive(Debug, Args)]
pub struct LsArgs {
    /// PEER:PATH (PEER alone lists its home directory).
    pub target: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `mesh`
#[derive(Debug, Subcommand)]
pub enum MeshCommand {
    /// This node and every peer: state, path, RTT.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Refresh every 2 s.
        #[arg(long)]
        watch: bool,
    },
}

/// `--json`
#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `init`
#[derive(Debug, Args)]
pub struct InitArgs {
    /// This machine's name in the mesh (default: the hostname).
    #[arg(long)]
    pub name: Option<String>,
    /// Replace an existing identity and config (the machine gets a new PeerId).
    #[arg(long)]
    pub force: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// Flags that configure a daemon run (override config.toml and LOOPSY_* env).
#[derive(Debug, Args, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DaemonArgs {
    /// Mesh listen port (0 = any free port).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Listen on loopback only.
    #[arg(long)]
    pub local_only: bool,
    /// Serve MCP over HTTP on 127.0.0.1:PORT (0 = any free port).
    #[arg(long, value_name = "PORT")]
    pub http_port: Option<u16>,
    /// Also serve as a circuit relay for trusted peers behind NATs (`relay.serve`).
    #[arg(long)]
    pub relay_node: bool,
}

/// The hidden `daemon` command's flags.
#[derive(Debug, Args)]
pub struct DaemonRunArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// Run with the flags the daemon last started with, and leave them recorded as they
    /// are (what a service manager's unit asks for: `loopsy enable` keeps `start`'s flags).
    #[arg(long, hide = true)]
    pub last_flags: bool,
}

/// `start`
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Stay in the foreground (for service managers and containers).
    #[arg(long)]
    pub foreground: bool,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

/// `logs`
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new lines.
    #[arg(short, long)]
    pub follow: bool,
    /// Show the audit log (one JSON line per tool call) instead.
    #[arg(long)]
    pub audit: bool,
    /// Lines to show from the end.
    #[arg(short = 'n', long, default_value_t = 50)]
    pub lines: usize,
}

/// `doctor`
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Fix what can be fixed safely (permissions).
    #[arg(long)]
    pub fix: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `enable` / `disable`
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// Print what would be written or run, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `key`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Print the token.
    Show,
    /// Replace the token; the running daemon switches at once, the old one stops working.
    Rotate,
}

impl DaemonArgs {
    /// As config overrides.
    pub fn overrides(&self) -> loopsy_mesh::Overrides {
        loopsy_mesh::Overrides {
            name: None,
            mesh_port: self.port,
            local_only: self.local_only.then_some(true),
            http_port: self.http_port,
            relay_serve: self.relay_node.then_some(true),
        }
    }

    /// As arguments for a spawned `loopsy daemon`.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(p) = self.port {
            v.extend(["--port".to_string(), p.to_string()]);
        }
        if self.local_only {
            v.push("--local-only".into());
        }
        if let Some(p) = self.http_port {
            v.extend(["--http-port".to_string(), p.to_string()]);
        }
        if self.relay_node {
            v.push("--relay-node".into());
        }
        v
    }
}

/// `loopsy mcp install|uninstall`
#[derive(Debug, clap::Subcommand)]
pub enum McpAction {
    /// Register loopsy in each installed agent's MCP config (Claude Code, Codex, Gemini CLI,
    /// Cursor, opencode). Edits in place, keeps a `.loopsy-backup`, changes nothing the
    /// second time.
    Install {
        /// Which agent (default: every installed one).
        #[arg(long, value_enum, default_value = "all")]
        agent: crate::mcp_install::Agent,
        /// Print the changes as a diff and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also add a short loopsy section to the agent's instructions file (CLAUDE.md,
        /// AGENTS.md, GEMINI.md) without asking; --no-instructions never does.
        #[arg(long, conflicts_with = "no_instructions")]
        instructions: bool,
        /// Leave instructions files alone.
        #[arg(long)]
        no_instructions: bool,
    },
    /// Remove loopsy from the agents' MCP configs and instructions files.
    Uninstall {
        /// Which agent (default: all).
        #[arg(long, value_enum, default_value = "all")]
        agent: crate::mcp_install::Agent,
        /// Print the changes as a diff and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `loopsy msg …`
#[derive(Debug, clap::Subcommand)]
pub enum MsgCommand {
    /// Send BODY to a peer (or `*` for all). Queued durably and retried until delivered.
    Send {
        /// Peer name or PeerId, or `*`.
        to: String,
        /// The message text.
        body: String,
        /// chat, request, response, broadcast or task.
        #[arg(long = "type", value_parser = ["chat", "request", "response", "broadcast", "task"])]
        kind: Option<String>,
        /// The id of the message this answers.
        #[arg(long)]
        reply_to: Option<String>,
        /// A conversation id.
        #[arg(long)]
        thread: Option<String>,
        /// Keep retrying this many seconds (default 7 days).
        #[arg(long)]
        ttl: Option<u64>,
        /// Seconds to wait for the delivery ack (0: return once queued).
        #[arg(long, default_value_t = 5)]
        wait: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The inbox (unread messages unless --all).
    Inbox {
        /// Read ones too.
        #[arg(long)]
        all: bool,
        /// Only from this peer.
        #[arg(long)]
        from: Option<String>,
        /// Only in this thread.
        #[arg(long)]
        thread: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Wait for an unread message and print it (exit code 1 on timeout).
    Wait {
        /// Only from this peer.
        #[arg(long)]
        from: Option<String>,
        /// Only in this thread.
        #[arg(long)]
        thread: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Mark a message read (its sender gets a read receipt).
    Ack {
        /// The message id.
        id: String,
    },
    /// Delivery and read state of sent messages: by id, the last ones to --peer, or (with
    /// neither) the last 100 sent.
    Status {
        /// The message id.
        id: Option<String>,
        /// A recipient.
        #[arg(long)]
        peer: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `loopsy ctx …`
#[derive(Debug, clap::Subcommand)]
pub enum CtxCommand {
    /// Set KEY to VALUE (a string; with --json, any JSON).
    Set {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Parse VALUE as JSON.
        #[arg(long)]
        json: bool,
        /// Expire after this many seconds.
        #[arg(long)]
        ttl: Option<u64>,
        /// Write on this peer instead.
        #[arg(long)]
        peer: Option<String>,
    },
    /// Print KEY's value (exit code 1 if it is not set).
    Get {
        /// The key.
        key: String,
        /// Print the whole entry as JSON.
        #[arg(long)]
        json: bool,
        /// Read this peer's copy.
        #[arg(long)]
        peer: Option<String>,
    },
    /// List keys (optionally only those starting with PREFIX).
    Ls {
        /// Key prefix.
        prefix: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// List this peer's copy.
        #[arg(long)]
        peer: Option<String>,
    },
    /// Print KEY's value now and each time it changes (Ctrl-C to stop).
    Watch {
        /// The key.
        key: String,
    },
    /// Write the whole context to FILE (or stdout): json, or automerge's binary document
    /// (which other automerge tools can load).
    Export {
        /// json or automerge.
        #[arg(long, default_value = "json", value_parser = ["json", "automerge"])]
        format: String,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
    /// Merge an export into the context (keys are added or updated; nothing is removed).
    Import {
        /// A file from `ctx export` (its format is detected).
        file: std::path::PathBuf,
    },
    /// Delete KEY.
    Rm {
        /// The key.
        key: String,
        /// Delete on this peer.
        #[arg(long)]
        peer: Option<String>,
    },
}
