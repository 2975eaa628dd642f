//! `loopsy`: the command line and the daemon, one binary. Thin: parses, wires the crates,
//! maps errors to messages and exit codes.

mod bridge;
mod cli;
mod client;
mod ctx_cmd;
mod daemon;
mod doctor;
mod exec_cmd;
mod files_cmd;
mod lifecycle;
mod logs;
mod mcp_install;
mod mesh_cmd;
mod msg_cmd;
mod relay_cmd;
mod service;
mod session_cmd;
mod setup;
mod ui;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use cli::{
    Cli, Command, CtxCommand, KeyCommand, McpAction, MeshCommand, MobileCommand, MsgCommand,
    PeersCommand, PhoneCommand, RelayCommand,
};
use loopsy_mesh::Home;
use serde_json::json;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            anstream::eprintln!("{} {e:#}", ui::paint(ui::BAD, "error:"));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    ui::set_raw(cli.raw);
    let home = Home::resolve(cli.home.as_deref()).map_err(anyhow::Error::msg)?;
    let ok = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
    match cli.command {
        Command::Init(a) => ok(setup::init(&home, a.name.as_deref(), a.force, a.json)),
        Command::Start(a) if a.foreground => ok(daemon::run(&home, &a.daemon)),
        Command::Start(a) => lifecycle::start(&home, &a.daemon),
        Command::RelayNode(mut a) => {
            a.daemon.relay_node = true;
            if a.foreground {
                ok(daemon::run(&home, &a.daemon))
            } else {
                lifecycle::start(&home, &a.daemon)
            }
        }
        Command::Stop => lifecycle::stop(&home, false).map(|_| ExitCode::SUCCESS),
        Command::Restart(a) => lifecycle::restart(&home, a),
        Command::Status(a) => lifecycle::status(&home, a.json),
        Command::Logs(a) => ok(logs::logs(&home, a.audit, a.lines, a.follow)),
        Command::Doctor(a) => doctor::doctor(&home, a.fix, a.json),
        Command::Enable(a) => ok(service::enable(&home, a.dry_run)),
        Command::Disable(a) => ok(service::disable(a.dry_run)),
        Command::Pair(a) => {
            mesh_cmd::pair(&home, a.addr.as_deref(), a.code.as_deref(), a.ttl, a.json)
        }
        Command::Peers(PeersCommand::List(a)) => mesh_cmd::peers_list(&home, a.json),
        Command::Peers(PeersCommand::Add { addr }) => {
            mesh_cmd::peers_change(&home, "loopsy_peer_add", json!({ "addr": addr }))
        }
        Command::Peers(PeersCommand::Remove { peer, here_only }) => mesh_cmd::peers_change(
            &home,
            "loopsy_peer_remove",
            json!({ "peer": peer, "here_only": here_only }),
        ),
        Command::Peers(PeersCommand::Rename { peer, name }) => mesh_cmd::peers_change(
            &home,
            "loopsy_peer_rename",
            json!({ "peer": peer, "name": name }),
        ),
        Command::Peers(PeersCommand::Grant { peer, caps }) => mesh_cmd::peers_change(
            &home,
            "loopsy_peer_grant",
            json!({ "peer": peer, "caps": check_caps(&caps)? }),
        ),
        Command::Peers(PeersCommand::Revoke { peer, caps }) => mesh_cmd::peers_change(
            &home,
            "loopsy_peer_revoke",
            json!({ "peer": peer, "caps": check_caps(&caps)? }),
        ),
        Command::Exec(a) => exec_cmd::exec(&home, &a),
        Command::Cp(a) => files_cmd::cp(&home, &a),
        Command::Ls(a) => files_cmd::ls(&home, &a.target, a.json),
        Command::Mesh(MeshCommand::Status { json, watch }) => {
            mesh_cmd::mesh_status(&home, json, watch)
        }
        Command::Mcp { action: None } => ok(bridge::run(&home)),
        Command::Mcp {
            action:
                Some(McpAction::Install {
                    agent,
                    dry_run,
                    instructions,
                    no_instructions,
                }),
        } => mcp_install::run(
            &home,
            agent,
            true,
            dry_run,
            if instructions {
                mcp_install::Instructions::Yes
            } else if no_instructions {
                mcp_install::Instructions::No
            } else {
                mcp_install::Instructions::Ask
            },
        ),
        Command::Mcp {
            action: Some(McpAction::Uninstall { agent, dry_run }),
        } => mcp_install::run(&home, agent, false, dry_run, mcp_install::Instructions::No),
        Command::Key(KeyCommand::Show) => ok(setup::key_show(&home)),
        Command::Key(KeyCommand::Rotate) => ok(setup::key_rotate(&home)),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "loopsy", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Daemon(a) if a.last_flags => ok(daemon::run_recorded(&home)),
        Command::Daemon(a) => ok(daemon::run(&home, &a.daemon)),
        Command::Ctx(CtxCommand::Set {
            key,
            value,
            json,
            ttl,
            peer,
        }) => ctx_cmd::set(&home, &key, &value, json, ttl, peer.as_deref()),
        Command::Ctx(CtxCommand::Get { key, json, peer }) => {
            ctx_cmd::get(&home, &key, json, peer.as_deref())
        }
        Command::Ctx(CtxCommand::Ls { prefix, json, peer }) => {
            ctx_cmd::ls(&home, prefix.as_deref(), json, peer.as_deref())
        }
        Command::Ctx(CtxCommand::Export { format, output }) => {
            ctx_cmd::export(&home, &format, output.as_deref())
        }
        Command::Ctx(CtxCommand::Import { file }) => ctx_cmd::import(&home, &file),
        Command::Ctx(CtxCommand::Watch { key }) => ctx_cmd::watch(&home, &key),
        Command::Ctx(CtxCommand::Rm { key, peer }) => ctx_cmd::rm(&home, &key, peer.as_deref()),
        Command::Msg(MsgCommand::Send {
            to,
            body,
            kind,
            reply_to,
            thread,
            ttl,
            wait,
            json,
        }) => msg_cmd::send(
            &home,
            &msg_cmd::SendOpts {
                to: &to,
                body: &body,
                kind: kind.as_deref(),
                reply_to: reply_to.as_deref(),
                thread: thread.as_deref(),
                ttl,
                wait,
                json,
            },
        ),
        Command::Msg(MsgCommand::Inbox {
            all,
            from,
            thread,
            limit,
            json,
        }) => msg_cmd::inbox(&home, all, from.as_deref(), thread.as_deref(), limit, json),
        Command::Msg(MsgCommand::Wait {
            from,
            thread,
            timeout,
            json,
        }) => msg_cmd::wait(&home, from.as_deref(), thread.as_deref(), timeout, json),
        Command::Msg(MsgCommand::Ack { id }) => msg_cmd::ack(&home, &id),
        Command::Msg(MsgCommand::Status { id, peer, json }) => {
            msg_cmd::status(&home, id.as_deref(), peer.as_deref(), json)
        }
        Command::Relay(RelayCommand::Configure {
            url,
            registration_secret_stdin,
            json,
        }) => relay_cmd::configure(&home, &url, registration_secret_stdin, json),
        Command::Relay(RelayCommand::Status(a)) => relay_cmd::status(&home, a.json),
        Command::Relay(RelayCommand::Deploy {
            name,
            domain,
            dry_run,
        }) => relay_cmd::deploy(&home, &name, domain.as_deref(), dry_run.as_deref()),
        Command::Relay(RelayCommand::Dev { port, lan }) => relay_cmd::dev(&home, port, lan),
        Command::Mobile(MobileCommand::Pair { ttl, json }) => {
            relay_cmd::mobile_pair(&home, ttl, json)
        }
        Command::Phone(PhoneCommand::List(a)) => relay_cmd::phone_list(&home, a.json),
        Command::Phone(PhoneCommand::Revoke { id }) => relay_cmd::phone_revoke(&home, &id),
        Command::Dashboard { no_open, json } => relay_cmd::dashboard(&home, no_open, json),
        Command::Sessions(a) => session_cmd::list(&home, a.peer.as_deref(), a.json),
        Command::Shell(a) => session_cmd::shell(
            &home,
            a.peer.as_deref(),
            a.name.as_deref(),
            &a.command,
            a.detached,
        ),
        Command::Attach { session, peer } => session_cmd::attach(&home, peer.as_deref(), &session),
        Command::Approve { id, json } => session_cmd::approve(&home, id.as_deref(), json),
        Command::Kill { session, rm, peer } => {
            session_cmd::kill(&home, &session, rm, peer.as_deref())
        }
        Command::SessionHost { sessions, id } => ok(session_cmd::host(&sessions, &id)),
    }
}

/// Validate capability names before they reach the daemon, with the list of valid ones.
fn check_caps(caps: &[String]) -> anyhow::Result<Vec<String>> {
    use loopsy_mesh::trust::Capability;
    caps.iter()
        .map(|c| {
            Capability::parse(c)
                .map(|c| c.name().to_string())
                .ok_or_else(|| {
                    let all: Vec<&str> = Capability::ALL.iter().map(|c| c.name()).collect();
                    anyhow::anyhow!("unknown capability {c:?}; use one of: {}", all.join(", "))
                })
        })
        .collect()
}
