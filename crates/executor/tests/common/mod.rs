//! Test helpers: a real local sshd per test host (own host key, own port on 127.0.0.1),
//! a shared client key, and the `fleetsudo` user (password `fleet-test-password`, full sudo
//! with a password), the same user the fleet-testbed creates.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use fleet_executor::{ConnectOptions, Connector, NoPassphrase, SshTarget};

pub const SUDO_USER: &str = "fleetsudo";
pub const SUDO_PASSWORD: &str = "fleet-test-password";

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A keypair made by ssh-keygen.
pub struct KeyPair {
    pub private: PathBuf,
    pub public_line: String,
}

pub fn keygen(dir: &Path, name: &str, passphrase: &str) -> KeyPair {
    let private = dir.join(name);
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-C", name, "-f"])
        .arg(&private));
    let public_line = std::fs::read_to_string(private.with_extension("pub"))
        .unwrap()
        .trim()
        .to_owned();
    KeyPair {
        private,
        public_line,
    }
}

struct Shared {
    _dir: tempfile::TempDir,
    client: KeyPair,
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let client = keygen(dir.path(), "client", "");
        Shared { _dir: dir, client }
    })
}

/// The client key every test sshd authorizes (for root and fleetsudo).
pub fn client_key() -> &'static Path {
    &shared().client.private
}

/// Creates `fleetsudo` (if missing) with the agreed password and a sudoers entry that needs
/// the password. Idempotent; safe to run from several test processes.
pub fn ensure_sudo_user() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let exists = Command::new("id")
            .arg(SUDO_USER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        if !exists {
            let _ = Command::new("useradd")
                .args(["-m", "-s", "/bin/sh", SUDO_USER])
                .status();
        }
        // The password goes through chpasswd's stdin, never argv.
        let mut child = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{SUDO_USER}:{SUDO_PASSWORD}\n").as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
        let sudoers = Path::new("/etc/sudoers.d/fleetsudo");
        if !sudoers.exists() {
            let tmp = sudoers.with_extension("tmp");
            std::fs::write(&tmp, format!("{SUDO_USER} ALL=(ALL) ALL\n")).unwrap();
            run(Command::new("chmod").arg("0440").arg(&tmp));
            std::fs::rename(&tmp, sudoers).unwrap();
        }
    });
}

/// A real sshd on 127.0.0.1:<free port>, killed on drop.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub host_key: String,
    child: Child,
}

impl Sshd {
    pub fn start() -> Sshd {
        std::fs::create_dir_all("/run/sshd").unwrap();
        for _attempt in 0..5 {
            if let Some(s) = Self::try_start() {
                return s;
            }
        }
        panic!("sshd did not start");
    }

    fn try_start() -> Option<Sshd> {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // sshd reads authorized_keys as the user: let fleetsudo in.
        run(Command::new("chmod").arg("0755").arg(d));
        let host = keygen(d, "host_key", "");
        let authorized = d.join("authorized_keys");
        std::fs::write(&authorized, format!("{}\n", shared().client.public_line)).unwrap();
        run(Command::new("chmod").arg("0644").arg(&authorized));
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = d.join("sshd_config");
        std::fs::write(
            &cfg,
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {hk}\nAuthorizedKeysFile {ak}\n\
                 PidFile {pid}\nStrictModes no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 UsePAM no\nMaxStartups 200\nMaxSessions 100\nLogLevel INFO\n",
                hk = host.private.display(),
                ak = authorized.display(),
                pid = d.join("sshd.pid").display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut s = Sshd {
            dir,
            port,
            host_key: host.public_line.rsplit_once(' ').unwrap().0.to_owned(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(s);
            }
            if let Ok(Some(_)) = s.child.try_wait() {
                return None; // port taken meanwhile: retry
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// A target for `user` with this sshd's key pinned and the shared client key.
    pub fn target(&self, name: &str, user: &str) -> SshTarget {
        SshTarget {
            name: name.to_owned(),
            address: Some("127.0.0.1".into()),
            port: Some(self.port),
            user: Some(user.to_owned()),
            identity_file: Some(client_key().to_owned()),
            host_key: Some(self.host_key.clone()),
            ..Default::default()
        }
    }

    /// Kills every process below this sshd (the sessions), leaving the listener. Use with
    /// sessions of the `sh`-shell user only.
    pub fn kill_sessions(&self) {
        for pid in descendants(self.pid()) {
            kill_pid(pid);
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Only the listener: sessions end with their client. (SIGKILLing a root session
        // mid-login can leave a stale lock of root's shell rc files behind, e.g. pyenv's.)
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kill_pid(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// All processes whose ancestry includes `root` (not `root` itself).
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parent = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: u32 = after.split(' ').nth(1).unwrap().parse().unwrap();
        parent.push((pid, ppid));
    }
    let mut out = vec![];
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parent {
            if pp == p {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

/// Options for tests: no ssh_config, no agent, a private known_hosts, the shared client key
/// as the default identity.
pub fn options(dir: &Path) -> ConnectOptions {
    let mut o = ConnectOptions::from_env();
    o.ssh_config = None;
    o.use_agent = false;
    o.known_hosts = dir.join("known_hosts");
    o.default_identity_files = vec![client_key().to_owned()];
    o.connect_timeout = Duration::from_secs(10);
    o
}

pub fn connector(dir: &Path) -> Arc<Connector> {
    Arc::new(Connector::new(options(dir), Arc::new(NoPassphrase)).unwrap())
}
