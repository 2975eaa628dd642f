//! `loopsy cp` and `loopsy ls`: file transfer from the command line, through the tools.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use loopsy_mesh::Home;
use serde_json::json;

use crate::client::Session;
use crate::ui::{self, DIM, OK};

/// `PEER:PATH` → (peer, path); anything else is local. A leading `/`, `.` or `~` is local,
/// so `./a:b` and `/x:y` stay local paths.
fn split_remote(s: &str) -> Option<(&str, &str)> {
    if s.starts_with(['/', '.', '~']) {
        return None;
    }
    let (peer, path) = s.split_once(':')?;
    (!peer.is_empty() && !peer.contains('/')).then_some((peer, path))
}

fn file_name(p: &str) -> &str {
    p.rsplit('/').find(|s| !s.is_empty()).unwrap_or(p)
}

/// A destination that is (or ends like) a directory gets the source's file name.
fn dest_with_name(dest: &str, source: &str, local_dir: bool) -> String {
    if dest.ends_with('/') || dest.is_empty() || local_dir {
        let base = if dest.is_empty() {
            "~/".to_string()
        } else {
            dest.trim_end_matches('/').to_string() + "/"
        };
        format!("{base}{}", file_name(source))
    } else {
        dest.to_string()
    }
}

fn absolute(p: &str) -> String {
    if p.starts_with('/') || p.starts_with('~') {
        return p.to_string();
    }
    std::path::absolute(p)
        .map(|a| a.display().to_string())
        .unwrap_or_else(|_| p.to_string())
}

/// `loopsy cp`
pub fn cp(home: &Home, a: &crate::cli::CpArgs) -> anyhow::Result<ExitCode> {
    let (source, dest, overwrite, json_out) =
        (a.source.as_str(), a.dest.as_str(), a.overwrite, a.json);
    let (direction, peer, src, dst) = match (split_remote(source), split_remote(dest)) {
        (None, Some((peer, path))) => (
            "push",
            peer,
            absolute(source),
            dest_with_name(path, source, false),
        ),
        (Some((peer, path)), None) => {
            let local = absolute(dest);
            let is_dir = Path::new(&local).is_dir();
            (
                "pull",
                peer,
                path.to_string(),
                dest_with_name(&local, path, is_dir),
            )
        }
        (Some(_), Some(_)) => {
            bail!("both sides are remote; copy through this machine in two steps")
        }
        (None, None) => bail!("neither side names a peer; write PEER:PATH on one side"),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let s = Session::connect_with_progress(home, Some(tx))?;
    // A progress bar on stderr (hidden when stderr is not a terminal, and with --json).
    let bar = if json_out {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:32.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let client = s.client().context("session closed")?;
    let args = json!({ "direction": direction, "peer": peer, "source": src, "dest": dst, "overwrite": overwrite, "preserve": !a.no_preserve });
    let r = s.block_on(async {
        let call = client.call("loopsy_transfer_file", args);
        tokio::pin!(call);
        loop {
            tokio::select! {
                r = &mut call => break r,
                Some(p) = rx.recv() => {
                    if let Some(t) = p.total {
                        bar.set_length(t as u64);
                    }
                    bar.set_position(p.progress as u64);
                }
            }
        }
    });
    bar.finish_and_clear();
    let r = r?;
    let v = r.structured_content.unwrap_or_default();
    if r.is_error == Some(true) {
        bail!("{}", v["message"].as_str().unwrap_or("the transfer failed"));
    }
    if json_out {
        ui::print_json(&v)?;
    } else {
        let bytes = v["bytes"].as_u64().unwrap_or(0);
        let secs = v["seconds"].as_f64().unwrap_or(0.0);
        let rate = bytes as f64 / 1048576.0 / secs.max(1e-6);
        let resumed = v["resumed_from"].as_u64().unwrap_or(0);
        anstream::println!(
            "{} {direction} {bytes} bytes in {secs:.2}s ({rate:.1} MiB/s){} {}",
            ui::paint(OK, "✓"),
            if resumed > 0 {
                format!(", resumed from {resumed}")
            } else {
                String::new()
            },
            ui::paint(
                DIM,
                format!(
                    "blake3 {}",
                    &v["blake3"].as_str().unwrap_or("")
                        [..16.min(v["blake3"].as_str().unwrap_or("").len())]
                )
            )
        );
        if let Some(w) = v["warning"].as_str() {
            anstream::eprintln!("{} {w}", ui::paint(ui::WARN, "warning:"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `loopsy ls`
pub fn ls(home: &Home, target: &str, json_out: bool) -> anyhow::Result<ExitCode> {
    let (peer, path) = match target.split_once(':') {
        Some((p, path)) if !p.is_empty() => (p, if path.is_empty() { "~" } else { path }),
        _ => (target, "~"),
    };
    let s = Session::connect(home)?;
    let v = s.call(
        "loopsy_list_remote_files",
        json!({ "peer": peer, "path": path }),
    )?;
    if json_out {
        return ui::print_json(&v).map(|()| ExitCode::SUCCESS);
    }
    for e in v["entries"].as_array().into_iter().flatten() {
        let kind = e["kind"].as_str().unwrap_or("?");
        let name = ui::safe_line(e["name"].as_str().unwrap_or("?"));
        let shown = if kind == "dir" {
            format!("{name}/")
        } else {
            name.to_string()
        };
        anstream::println!(
            "{:>12}  {shown}",
            if kind == "dir" {
                "-".into()
            } else {
                human(e["size"].as_u64().unwrap_or(0))
            }
        );
    }
    if v["truncated"].as_bool() == Some(true) {
        anstream::println!(
            "{}",
            ui::paint(DIM, "… more than 10,000 entries; the rest are not shown")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn human(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_specs() {
        assert_eq!(split_remote("kai:~/x"), Some(("kai", "~/x")));
        assert_eq!(split_remote("kai:"), Some(("kai", "")));
        assert_eq!(split_remote("./a:b"), None);
        assert_eq!(split_remote("/tmp/a:b"), None);
        assert_eq!(split_remote("dir/a:b"), None);
        assert_eq!(split_remote("plain"), None);
        assert_eq!(
            dest_with_name("~/in/", "/tmp/build.tar", false),
            "~/in/build.tar"
        );
        assert_eq!(dest_with_name("", "/tmp/build.tar", false), "~/build.tar");
        assert_eq!(
            dest_with_name("/tmp/out", "~/log.txt", true),
            "/tmp/out/log.txt"
        );
        assert_eq!(
            dest_with_name("/tmp/out.txt", "~/log.txt", false),
            "/tmp/out.txt"
        );
        assert_eq!(human(1536), "1.5 KiB");
    }
}
