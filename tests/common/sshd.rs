//! A throwaway sshd on 127.0.0.1 with fresh keys and a warm ControlMaster: the baseline the
//! exec/cp parity suite and the mesh benchmark measure loopsy against. Needs `sshd`, `ssh`,
//! `ssh-keygen` and `scp` (scripts/setup-test installs openssh-server and openssh-client).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The sshd and the client options that reach it.
pub struct Sshd {
    child: Child,
    dir: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    user: String,
}

fn run_ok(c: &mut Command) {
    let o = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        o.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Sshd {
    /// Start one with its files under `dir/ssh`, and a warm master connection.
    pub fn start(dir: &Path) -> Self {
        let dir = dir.join("ssh");
        std::fs::create_dir_all(&dir).unwrap();
        for k in ["host", "client"] {
            run_ok(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(dir.join(k)),
            );
        }
        std::fs::copy(dir.join("client.pub"), dir.join("authorized_keys")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host\nAuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile {d}/sshd.pid\nSubsystem sftp /usr/lib/openssh/sftp-server\n",
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), cfg).unwrap();
        std::fs::create_dir_all("/run/sshd").ok();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd (scripts/setup-test installs openssh-server)");
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        let s = Self {
            child,
            dir,
            port,
            user,
        };
        let t0 = Instant::now();
        while !s.ssh(&["true"]).status.success() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "sshd did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The warm master every `ssh`/`scp` multiplexes over (`-oControlMaster=no` in opts()
        // means "use it, never become one"; ssh keeps the first value of an option, so
        // `yes` goes first). Its stdio goes to /dev/null: a detached master would hold
        // captured pipes open.
        let st = Command::new("ssh")
            .args(["-oControlMaster=yes", "-N", "-f"])
            .args(s.opts())
            .arg(format!("-p{}", s.port))
            .arg(s.target())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "ssh ControlMaster did not start");
        s
    }

    /// `user@127.0.0.1`.
    pub fn target(&self) -> String {
        format!("{}@127.0.0.1", self.user)
    }

    /// The client options (key, no host key checks, the master's socket).
    pub fn opts(&self) -> Vec<String> {
        let d = self.dir.display();
        [
            format!("-i{d}/client"),
            "-oStrictHostKeyChecking=no".into(),
            "-oUserKnownHostsFile=/dev/null".into(),
            "-oLogLevel=ERROR".into(),
            "-oControlMaster=no".into(),
            // The cipher the mesh's TLS sessions negotiate (TLS13_AES_128_GCM_SHA256,
            // mesh/src/tls.rs), so bulk rows compare like with like.
            "-oCiphers=aes128-gcm@openssh.com".into(),
            format!("-oControlPath={d}/cm"),
            "-oControlPersist=120".into(),
        ]
        .to_vec()
    }

    /// An `ssh` command to run `cmd` (a command line for the remote shell).
    pub fn command(&self, cmd: &[&str]) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.opts())
            .arg(format!("-p{}", self.port))
            .arg(self.target())
            .args(cmd);
        c
    }

    /// Run `cmd` over ssh, stdin empty.
    pub fn ssh(&self, cmd: &[&str]) -> Output {
        self.command(cmd).stdin(Stdio::null()).output().unwrap()
    }

    /// `scp src user@127.0.0.1:dest` as a user runs it by default: its own connection (no
    /// master, so its handshake is in the time) and OpenSSH's default cipher choice
    /// (ChaCha20-Poly1305 first).
    pub fn scp_default(&self, src: &Path, dest: &Path) {
        let d = self.dir.display();
        run_ok(
            Command::new("scp")
                .arg(format!("-i{d}/client"))
                .args([
                    "-oStrictHostKeyChecking=no",
                    "-oUserKnownHostsFile=/dev/null",
                    "-oLogLevel=ERROR",
                    "-oControlPath=none",
                ])
                .arg(format!("-P{}", self.port))
                .arg(src)
                .arg(format!("{}:{}", self.target(), dest.display())),
        );
    }

    /// `scp [extra…] src user@127.0.0.1:dest`.
    pub fn scp(&self, extra: &[&str], src: &Path, dest: &Path) {
        run_ok(
            Command::new("scp")
                .args(self.opts())
                .args(extra)
                .arg(format!("-P{}", self.port))
                .arg(src)
                .arg(format!("{}:{}", self.target(), dest.display())),
        );
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = Command::new("ssh")
            .args(self.opts())
            .args(["-O", "exit", "-p"])
            .arg(self.port.to_string())
            .arg(self.target())
            .output();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
