//! `loopsy exec` against `ssh` on loopback: each row runs the same argv both ways and must
//! give byte-identical stdout and stderr and the same exit status. Then what ssh users count
//! on beyond the table: Ctrl-C and a dead client leave nothing running on the peer, and a
//! stopped peer fails fast with 255 and its name.
// POSIX shells, signals and sshd: Linux and macOS.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::sshd::Sshd;
use common::{TestHome, pair, wait_until};

/// `'…'`-quote one word for the remote shell ssh hands its command line to.
fn quote(w: &str) -> String {
    format!("'{}'", w.replace('\'', r"'\''"))
}

fn with_stdin(mut c: Command, stdin: Option<&[u8]>) -> Output {
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(data) = stdin {
        let mut w = child.stdin.take().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = w.write_all(&data);
        });
    }
    child.wait_with_output().unwrap()
}

fn digest(b: &[u8]) -> String {
    use std::fmt::Write as _;
    // A short digest for the report (not security): FNV-1a over the bytes.
    let mut h: u64 = 0xcbf29ce484222325;
    for &x in b {
        h = (h ^ x as u64).wrapping_mul(0x100000001b3);
    }
    let mut s = String::new();
    let _ = write!(s, "{h:016x}/{}B", b.len());
    s
}

/// A parity row: its label, the argv run both ways, and the stdin given.
type Row<'a> = (&'a str, Vec<&'a str>, Option<&'a [u8]>);

struct Lab {
    _a: TestHome,
    a: std::path::PathBuf,
    b: TestHome,
    sshd: Sshd,
    tmp: tempfile::TempDir,
}

/// A daemon on loopback whose file policy allows `files` (the lab's scratch dir).
fn started(name: &str, files: &Path) -> TestHome {
    let h = TestHome::new();
    h.ok(&["init", "--name", name]);
    std::fs::write(
        h.path().join("config.toml"),
        format!(
            "[node]\nname = \"{name}\"\n[mesh]\nlisten_port = 0\nlocal_only = true\n[files]\nallowed_paths = [\"{}\"]\n",
            files.display()
        ),
    )
    .unwrap();
    h.ok(&["start"]);
    h
}

fn lab() -> Lab {
    let tmp = tempfile::Builder::new()
        .prefix("lp")
        .tempdir_in("/tmp")
        .unwrap();
    let a = started("alpha", tmp.path());
    let b = started("beta", tmp.path());
    pair(&a, &b);
    let sshd = Sshd::start(tmp.path());
    Lab {
        a: a.path().to_path_buf(),
        _a: a,
        b,
        sshd,
        tmp,
    }
}

impl Lab {
    fn loopsy_exec(&self, argv: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut c = Command::new(common::bin());
        c.arg("--home").arg(&self.a).args(["exec", "beta", "--"]);
        c.args(argv);
        with_stdin(c, stdin)
    }

    fn ssh(&self, argv: &[&str], stdin: Option<&[u8]>) -> Output {
        let line: Vec<String> = argv.iter().map(|w| quote(w)).collect();
        let line = line.join(" ");
        with_stdin(self.sshd.command(&[&line]), stdin)
    }
}

#[test]
fn exec_matches_ssh_byte_for_byte() {
    let l = lab();
    let data = l.tmp.path().join("random.bin");
    let mut rnd = vec![0u8; 16 << 20];
    let mut f = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut f, &mut rnd).unwrap();
    std::fs::write(&data, &rnd).unwrap();
    let data = data.to_str().unwrap().to_string();
    let stdin_bytes: Vec<u8> = rnd[..3 << 20].to_vec();
    // (label, argv, stdin)
    // Where ssh cannot tell a death by signal from its own failure (it exits 255 for both),
    // loopsy reports what a local shell would: 128 + N.
    let by_signal = |label: &str| match label {
        "death by SIGTERM" => Some(143),
        "death by SIGKILL" => Some(137),
        _ => None,
    };
    let rows: Vec<Row> = vec![
        (
            "binary output (16 MiB of random bytes)",
            vec!["head", "-c", "16777216", &data],
            None,
        ),
        (
            "gzip -c | gunzip on the peer",
            vec!["sh", "-c", "gzip -c \"$0\" | gunzip", &data],
            None,
        ),
        (
            "gzip -c (binary) to the caller",
            vec!["gzip", "-c", &data],
            None,
        ),
        ("seq 1 5000000", vec!["seq", "1", "5000000"], None),
        (
            "stdin piped through cat (3 MiB)",
            vec!["cat"],
            Some(&stdin_bytes),
        ),
        (
            "stdin counted by wc -c",
            vec!["wc", "-c"],
            Some(&stdin_bytes),
        ),
        ("exit 0", vec!["sh", "-c", "exit 0"], None),
        ("exit 1", vec!["sh", "-c", "exit 1"], None),
        ("exit 42", vec!["sh", "-c", "exit 42"], None),
        (
            "stdout and stderr apart",
            vec!["sh", "-c", "echo out; echo err >&2; echo out2; exit 3"],
            None,
        ),
        (
            "death by SIGTERM",
            vec!["sh", "-c", "echo before; kill -TERM $$"],
            None,
        ),
        ("death by SIGKILL", vec!["sh", "-c", "kill -KILL $$"], None),
        (
            "a missing command",
            vec!["sh", "-c", "no-such-command-xyz"],
            None,
        ),
        (
            "a missing directory",
            vec!["sh", "-c", "cd /no/such/dir && pwd"],
            None,
        ),
        ("no stdin given: EOF at once", vec!["wc", "-c"], None),
    ];
    let mut report = Vec::new();
    let mut bad = Vec::new();
    for (label, argv, stdin) in &rows {
        let s = l.ssh(argv, *stdin);
        let o = l.loopsy_exec(argv, *stdin);
        let status_ok = match by_signal(label) {
            Some(code) => s.status.code() == Some(255) && o.status.code() == Some(code),
            None => s.status.code() == o.status.code(),
        };
        let same = s.stdout == o.stdout && s.stderr == o.stderr && status_ok;
        report.push(format!(
            "{} {label}: ssh {:?} {} {} | loopsy {:?} {} {}",
            if same { "=" } else { "≠" },
            s.status.code(),
            digest(&s.stdout),
            digest(&s.stderr),
            o.status.code(),
            digest(&o.stdout),
            digest(&o.stderr),
        ));
        if !same {
            bad.push(format!(
                "{label}: ssh stderr {:?}, loopsy stderr {:?}",
                String::from_utf8_lossy(&s.stderr),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(bad.is_empty(), "rows that differ:\n{}", bad.join("\n"));
    // The rows above prove something only if they ran what they say.
    let binary = l.loopsy_exec(&["head", "-c", "16777216", &data], None);
    assert_eq!(binary.stdout, rnd, "the binary row did not carry the file");
}

/// Processes on this machine whose whole command line is `sleep <n>`.
fn running(n: u32) -> Vec<String> {
    let o = Command::new("pgrep")
        .args(["-af", &format!("^sleep {n}$")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.contains("pgrep"))
        .map(str::to_string)
        .collect()
}

fn spawn_exec(a: &Path, argv: &[&str]) -> std::process::Child {
    Command::new(common::bin())
        .arg("--home")
        .arg(a)
        .args(["exec", "beta", "--"])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn ctrl_c_and_a_dead_client_leave_nothing_on_the_peer() {
    let l = lab();
    // Ctrl-C: SIGINT to the remote group; the shell dies of it, and what it left in the
    // background (which ignores SIGINT) is ended too.
    let mut c = spawn_exec(
        &l.a,
        &["sh", "-c", "sleep 3117 & sleep 3117 & echo up; wait", "x"],
    );
    let mut out = c.stdout.take().unwrap();
    let mut first = [0u8; 3];
    std::io::Read::read_exact(&mut out, &mut first).unwrap();
    assert_eq!(&first, b"up\n");
    assert_eq!(running(3117).len(), 2, "{:?}", running(3117));
    let t0 = Instant::now();
    Command::new("kill")
        .args(["-INT", &c.id().to_string()])
        .status()
        .unwrap();
    let st = c.wait().unwrap();
    assert_eq!(st.code(), Some(130), "the status of a death by SIGINT");
    wait_until("the job's processes to end", Duration::from_secs(2), || {
        running(3117).is_empty()
    });
    eprintln!("Ctrl-C: peer clean after {:?}", t0.elapsed());

    // SIGTERM to the CLI: the remote program gets SIGTERM (143).
    let mut c = spawn_exec(&l.a, &["sh", "-c", "echo up; exec sleep 3118"]);
    let mut out = c.stdout.take().unwrap();
    std::io::Read::read_exact(&mut out, &mut first).unwrap();
    Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(c.wait().unwrap().code(), Some(143));
    wait_until("sleep 3118 to end", Duration::from_secs(2), || {
        running(3118).is_empty()
    });

    // Ctrl-C while output pours in: the signal goes between frames, the stream stays whole,
    // and the status is still the program's death by SIGINT.
    for round in 0..5 {
        let mut c = spawn_exec(&l.a, &["sh", "-c", "exec yes loopsy-yes"]);
        let mut out = c.stdout.take().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < 4 << 20 {
            got += std::io::Read::read(&mut out, &mut buf).unwrap();
        }
        Command::new("kill")
            .args(["-INT", &c.id().to_string()])
            .status()
            .unwrap();
        let drain = std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = std::io::Read::read_to_end(&mut out, &mut all);
            all
        });
        let o = c.wait_with_output().unwrap();
        let tail = drain.join().unwrap();
        assert_eq!(
            o.status.code(),
            Some(130),
            "round {round}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        // Whole lines only: no frame was cut and re-read as output.
        assert!(
            tail.split(|&b| b == b'\n')
                .all(|l| l.is_empty() || l == b"loopsy-yes" || l.len() < 10)
        );
    }

    // kill -9 of the CLI: nothing is left to forward anything, and still the job goes.
    let mut c = spawn_exec(&l.a, &["sh", "-c", "echo up; sleep 3119; true"]);
    let mut out = c.stdout.take().unwrap();
    std::io::Read::read_exact(&mut out, &mut first).unwrap();
    assert_eq!(running(3119).len(), 1);
    c.kill().unwrap();
    c.wait().unwrap();
    wait_until(
        "the job of a killed client to end",
        Duration::from_secs(3),
        || running(3119).is_empty(),
    );
}

#[test]
fn a_stopped_peer_fails_fast_with_255_and_its_name() {
    let l = lab();
    l.b.ok(&["stop"]);
    let t0 = Instant::now();
    let o = Command::new(common::bin())
        .arg("--home")
        .arg(&l.a)
        .args(["exec", "beta", "--", "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = t0.elapsed();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(255), "{err}");
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert!(
        err.contains("beta") && !err.contains("12D3Koo") && err.lines().count() == 1,
        "one line naming the peer: {err:?}"
    );
    // ssh to a closed port: 255 too.
    let s = l.sshd.ssh(&["true"]);
    assert_eq!(s.status.code(), Some(0), "the baseline sshd still answers");
}

/// `exec` revoked on the peer while a command streams: the stream ends at once with 255 and
/// the reason, and the remote program is ended.
#[test]
fn revoking_exec_mid_stream_ends_the_command_there() {
    let l = lab();
    let mut c = spawn_exec(
        &l.a,
        &["sh", "-c", "echo up; while true; do sleep 3119; done"],
    );
    let mut out = c.stdout.take().unwrap();
    let mut first = [0u8; 3];
    std::io::Read::read_exact(&mut out, &mut first).unwrap();
    assert_eq!(&first, b"up\n");
    assert_eq!(running(3119).len(), 1, "{:?}", running(3119));
    l.b.ok(&["peers", "revoke", "alpha", "exec"]);
    let t0 = Instant::now();
    wait_until("the exec to end", Duration::from_secs(5), || {
        c.try_wait().unwrap().is_some()
    });
    let o = c.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(255), "{err}");
    assert!(err.contains("exec revoked on beta"), "{err}");
    wait_until("the remote program to end", Duration::from_secs(2), || {
        running(3119).is_empty()
    });
    eprintln!("revoked: ended after {:?}", t0.elapsed());
}

#[test]
fn own_failures_exit_255_with_whose_policy_it_was() {
    let l = lab();
    let run = |args: &[&str]| {
        Command::new(common::bin())
            .arg("--home")
            .arg(&l.a)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = run(&["exec", "nobody", "--", "true"]);
    assert_eq!(o.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nobody"));
    let o = run(&["exec", "beta", "--cwd", "/no/such/dir", "--", "pwd"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(255), "{err}");
    assert!(
        err.contains("/no/such/dir") && err.contains("working directory"),
        "{err}"
    );
    let o = run(&["exec", "beta", "--cwd", "~", "--", "pwd"]);
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        std::env::var("HOME").unwrap().trim_end_matches('/')
    );
    l.b.ok(&["peers", "revoke", "alpha", "exec"]);
    let o = run(&["exec", "beta", "--", "true"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(255), "{err}");
    assert!(
        err.contains("beta's policy")
            && err.contains("on beta, run `loopsy peers grant alpha exec`"),
        "{err}"
    );
}

#[test]
fn cp_keeps_modes_and_mtimes_as_scp_p_does() {
    use std::os::unix::fs::PermissionsExt;
    let l = lab();
    let dir = l.tmp.path();
    let stat = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        let secs = m
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        (m.permissions().mode() & 0o777, secs)
    };
    let mut rows = Vec::new();
    for (name, mode) in [
        ("script.sh", 0o755),
        ("private.txt", 0o600),
        ("shared.txt", 0o644),
    ] {
        let src = dir.join(name);
        std::fs::write(&src, format!("{name}\n")).unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(mode)).unwrap();
        let then = std::time::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
        std::fs::File::options()
            .write(true)
            .open(&src)
            .unwrap()
            .set_modified(then)
            .unwrap();
        let by_scp = dir.join(format!("scp-{name}"));
        let by_loopsy = dir.join(format!("loopsy-{name}"));
        l.sshd.scp(&["-p"], &src, &by_scp);
        let o = Command::new(common::bin())
            .arg("--home")
            .arg(&l.a)
            .args(["cp", &src.display().to_string()])
            .arg(format!("beta:{}", by_loopsy.display()))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // And back: a pull keeps them too.
        let back = dir.join(format!("back-{name}"));
        let o = Command::new(common::bin())
            .arg("--home")
            .arg(&l.a)
            .args(["cp", &format!("beta:{}", by_loopsy.display())])
            .arg(&back)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        rows.push((
            name,
            stat(&src),
            stat(&by_scp),
            stat(&by_loopsy),
            stat(&back),
        ));
    }
    eprintln!("(name, source, scp -p, loopsy push, loopsy pull): {rows:?}");
    for (name, src, scp, pushed, pulled) in rows {
        assert_eq!(scp, src, "{name}: the scp baseline");
        assert_eq!(pushed, scp, "{name}: push");
        assert_eq!(pulled, scp, "{name}: pull");
    }
}

#[test]
fn cp_to_a_stopped_peer_fails_fast_with_its_name() {
    let l = lab();
    let src = l.tmp.path().join("f.txt");
    std::fs::write(&src, "x").unwrap();
    l.b.ok(&["stop"]);
    for args in [
        vec![
            "cp".to_string(),
            src.display().to_string(),
            format!("beta:{}", l.tmp.path().join("g.txt").display()),
        ],
        vec!["ls".to_string(), format!("beta:{}", l.tmp.path().display())],
    ] {
        let t0 = Instant::now();
        let o = Command::new(common::bin())
            .arg("--home")
            .arg(&l.a)
            .args(&args)
            .output()
            .unwrap();
        let took = t0.elapsed();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(took < Duration::from_secs(6), "{args:?} took {took:?}");
        assert!(
            err.contains("beta") && !err.contains("12D3Koo") && err.lines().count() == 1,
            "{args:?}: one line naming the peer: {err:?}"
        );
    }
}

#[test]
fn a_long_exec_streams_without_polling_one_audit_line_each_side() {
    let l = lab();
    let o = l.loopsy_exec(
        &["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.5; done"],
        None,
    );
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout), "1\n2\n3\n");
    // The runner records the pipe once when it ends (the old CLI polled, ~30 lines a second).
    let audit = l.b.path().join("logs/audit.jsonl");
    let lines = || {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"peer:alpha\"") && (l.contains("exec") || l.contains("job")))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    wait_until("beta's audit record", Duration::from_secs(10), || {
        !lines().is_empty()
    });
    let all = lines();
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(
        all[0].contains("\"exec_pipe\"") && all[0].contains("\"ok\""),
        "{all:?}"
    );
}

#[test]
fn exec_t_runs_in_a_terminal_and_leaves_no_session_behind() {
    let l = lab();
    let run = |argv: &[&str]| {
        let mut c = Command::new(common::bin());
        c.arg("--home").arg(&l.a).args(["exec", "-t", "beta", "--"]);
        c.args(argv);
        with_stdin(c, Some(b""))
    };
    // In a PTY: `tty` names one, and the status is the program's.
    let o = run(&["sh", "-c", "tty; sleep 0.3; exit 7"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(7),
        "{out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("/dev/pts/"), "{out}");
    // A program that ends at once still runs and shows its output.
    let o = run(&["echo quick-$((6*7))"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("quick-42"));
    // `--cwd '~'` is the peer's home, in a terminal too.
    let mut c = Command::new(common::bin());
    c.arg("--home")
        .arg(&l.a)
        .args(["exec", "-t", "--cwd", "~", "beta", "--", "pwd"]);
    let o = with_stdin(c, Some(b""));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let home = std::env::var("HOME").unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(home.trim_end_matches('/')),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // The sessions were removed once they ended.
    let list: serde_json::Value = serde_json::from_str(&l.b.ok(&["sessions", "--json"])).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
}
