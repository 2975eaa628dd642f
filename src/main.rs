//! `loopsy`: the command line and the daemon, one binary. Thin: parses, wires the crates,
//! maps errors to messages and exit codes.

mod bridge;
mod cli;
mod daemon;
mod doctor;
mod lifecycle;
mod logs;
mod service;
mod setup;
mod ui;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command, KeyCommand};
use loopsy_mesh::Home;

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
    let home = Home::resolve(cli.home.as_deref()).map_err(anyhow::Error::msg)?;
    let ok = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
    match cli.command {
        Command::Init(a) => ok(setup::init(&home, a.name.as_deref(), a.force, a.json)),
        Command::Start(a) if a.foreground => ok(daemon::run(&home, &a.daemon.overrides())),
        Command::Start(a) => lifecycle::start(&home, &a.daemon),
        Command::Stop => lifecycle::stop(&home, false).map(|_| ExitCode::SUCCESS),
        Command::Restart(a) => {
            lifecycle::stop(&home, true)?;
            lifecycle::start(&home, &a)
        }
        Command::Status(a) => lifecycle::status(&home, a.json),
        Command::Logs(a) => ok(logs::logs(&home, a.audit, a.lines, a.follow)),
        Command::Doctor(a) => doctor::doctor(&home, a.fix, a.json),
        Command::Enable(a) => ok(service::enable(&home, a.dry_run)),
        Command::Disable(a) => ok(service::disable(a.dry_run)),
        Command::Mcp => ok(bridge::run(&home)),
        Command::Key(KeyCommand::Show) => ok(setup::key_show(&home)),
        Command::Key(KeyCommand::Rotate) => ok(setup::key_rotate(&home)),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "loopsy", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Daemon(a) => ok(daemon::run(&home, &a.overrides())),
    }
}
