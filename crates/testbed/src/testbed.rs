//! [`Testbed`]: start N simulated hosts, use them, tear them down.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cmd::{cmd, describe, output, run};
use crate::error::{Error, Result};
use crate::host::{HostSpec, Login, SimHost};
use crate::instance::{self, InstanceLock};
use crate::prereq::{ensure_prerequisites, sudo_user_entry, SUDO_PASSWORD, SUDO_USER};
use crate::userland;

/// How long sshd may take to listen.
const SSHD_TIMEOUT: Duration = Duration::from_secs(15);
/// The PATH inside a host for [`Testbed::exec`].
const HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Where a filled disk's filler file goes.
const FILL_FILE: &str = "/nix/.fleet-testbed-fill";

/// Configures and starts a [`Testbed`].
#[derive(Debug, Clone)]
pub struct TestbedBuilder {
    hosts: Vec<HostSpec>,
    extra_platforms: Option<String>,
}

impl Default for TestbedBuilder {
    fn default() -> Self {
        TestbedBuilder {
            hosts: Vec::new(),
            extra_platforms: Some("aarch64-linux".into()),
        }
    }
}

impl TestbedBuilder {
    /// Adds a host.
    pub fn host(mut self, spec: HostSpec) -> Self {
        self.hosts.push(spec);
        self
    }

    /// Adds hosts.
    pub fn hosts(mut self, specs: impl IntoIterator<Item = HostSpec>) -> Self {
        self.hosts.extend(specs);
        self
    }

    /// `extra-platforms` in [`Testbed::nix_env`]; `None` leaves it out (default:
    /// `aarch64-linux`).
    pub fn extra_platforms(mut self, platforms: Option<&str>) -> Self {
        self.extra_platforms = platforms.map(str::to_owned);
        self
    }

    /// Prepares the machine ([`ensure_prerequisites`]) and starts every host.
    pub fn start(self) -> Result<Testbed> {
        Testbed::start_with(self)
    }
}

/// What only the testbed needs to know about a host.
#[derive(Debug)]
pub(crate) struct Runtime {
    pub(crate) dir: PathBuf,
    /// `ip netns exec ... unshare -m ... sleep infinity`: owns the mount namespace.
    holder: Mutex<Option<Child>>,
    pub(crate) holder_pid: u32,
    /// Shared with a background boot ([`crate::Booting`]), which starts sshd later.
    pub(crate) sshd: Arc<Mutex<Option<Child>>>,
    /// Bumped by every reboot and by teardown: a background boot of an older generation does
    /// not start sshd.
    pub(crate) boots: Arc<AtomicU64>,
    /// The userland root its programs run in (`None`: the machine's own).
    root: Option<PathBuf>,
}

/// Timings of a start, for reports and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartTimings {
    pub total: Duration,
    pub sshd_ready: Duration,
}

/// A running simulated fleet. Dropping it tears it down (prefer [`Testbed::teardown`] to see
/// errors).
#[derive(Debug)]
pub struct Testbed {
    lock: Option<InstanceLock>,
    number: u32,
    state_dir: PathBuf,
    pub(crate) hosts: Vec<SimHost>,
    pub(crate) runtimes: Vec<Runtime>,
    extra_platforms: Option<String>,
    client_key: PathBuf,
    known_hosts: PathBuf,
    timings: StartTimings,
}

impl Testbed {
    /// A builder; add hosts, then [`TestbedBuilder::start`].
    pub fn builder() -> TestbedBuilder {
        TestbedBuilder::default()
    }

    /// Starts these hosts with default settings.
    pub fn start(hosts: impl IntoIterator<Item = HostSpec>) -> Result<Testbed> {
        Testbed::builder().hosts(hosts).start()
    }

    fn start_with(config: TestbedBuilder) -> Result<Testbed> {
        let started = Instant::now();
        for (i, spec) in config.hosts.iter().enumerate() {
            if let Some(reason) = spec.problem() {
                return Err(Error::InvalidHost {
                    name: spec.name.clone(),
                    reason: reason.into(),
                });
            }
            if config.hosts[..i].iter().any(|h| h.name == spec.name) {
                return Err(Error::InvalidHost {
                    name: spec.name.clone(),
                    reason: "two hosts with this name".into(),
                });
            }
        }
        if config.hosts.len() > 200 {
            return Err(Error::InvalidHost {
                name: format!("({} hosts)", config.hosts.len()),
                reason: "at most 200 hosts per testbed".into(),
            });
        }
        ensure_prerequisites()?;
        let roots = userland::roots_for(&config.hosts)?;
        let lock = instance::acquire()?;
        let number = lock.number();
        let state_dir = instance::state_dir(number);
        mkdir(&state_dir)?;
        let mut tb = Testbed {
            lock: Some(lock),
            number,
            client_key: state_dir.join("client_key"),
            known_hosts: state_dir.join("known_hosts"),
            state_dir,
            hosts: Vec::new(),
            runtimes: Vec::new(),
            extra_platforms: config.extra_platforms.clone(),
            timings: StartTimings::default(),
        };
        // From here on, Drop cleans up whatever a failure leaves half-made.
        tb.setup(&config.hosts, &roots)?;
        let sshd_started = Instant::now();
        for i in 0..tb.hosts.len() {
            tb.spawn_sshd(i)?;
        }
        for i in 0..tb.hosts.len() {
            tb.wait_sshd(i)?;
        }
        tb.timings = StartTimings {
            total: started.elapsed(),
            sshd_ready: sshd_started.elapsed(),
        };
        Ok(tb)
    }

    fn setup(&mut self, specs: &[HostSpec], roots: &userland::Roots) -> Result<()> {
        let n = self.number;
        keygen(&self.client_key, "fleet-testbed-client")?;
        let client_pub = read(&self.client_key.with_extension("pub"))?;
        let authorized = self.state_dir.join("authorized_keys");
        write(&authorized, &client_pub)?;
        let bridge = instance::bridge_name(n);
        run(&mut cmd("ip", ["link", "add", &bridge, "type", "bridge"]))?;
        run(&mut cmd(
            "ip",
            ["addr", "add", &format!("172.31.{n}.1/24"), "dev", &bridge],
        ))?;
        run(&mut cmd("ip", ["link", "set", &bridge, "up"]))?;

        let mut known_hosts = String::new();
        for (i, spec) in specs.iter().enumerate() {
            let host = self.setup_host(i, spec, &authorized, roots.get(&spec.userland))?;
            let _ = writeln!(known_hosts, "{} {}", host.address, host.host_key_line);
            self.hosts.push(host);
        }
        write(&self.known_hosts, &known_hosts)
    }

    fn setup_host(
        &mut self,
        i: usize,
        spec: &HostSpec,
        authorized: &Path,
        root: Option<&PathBuf>,
    ) -> Result<SimHost> {
        let n = self.number;
        let dir = self.state_dir.join(&spec.name);
        for sub in ["nix", "etc-nixos", "boot", "ssh", "root", "home"] {
            mkdir(&dir.join(sub))?;
        }
        // Private home directories: the deployer's dotfiles are not the host's.
        let (uid, gid, home) = sudo_user_entry().ok_or_else(|| Error::HostSetup {
            host: spec.name.clone(),
            stderr: format!("user {SUDO_USER} is missing from /etc/passwd"),
        })?;
        let set_owner = |path: &Path, mode: u32, owner: Option<(u32, u32)>| {
            let r = fs::set_permissions(path, fs::Permissions::from_mode(mode)).and_then(|()| {
                owner.map_or(Ok(()), |(u, g)| {
                    std::os::unix::fs::chown(path, Some(u), Some(g))
                })
            });
            r.map_err(|source| Error::Io {
                action: "setting owner and mode of",
                path: path.into(),
                source,
            })
        };
        set_owner(&dir.join("root"), 0o700, None)?;
        set_owner(&dir.join("home"), 0o750, Some((uid, gid)))?;
        mkdir(Path::new(&home))?;
        let key = dir.join("ssh/ssh_host_ed25519_key");
        keygen(&key, &spec.name)?;
        let host_key_line = key_line(&read(&key.with_extension("pub"))?);
        let ip = Ipv4Addr::new(172, 31, n as u8, 10 + i as u8);
        let netns = format!("{}{}", instance::netns_prefix(n), spec.name);
        let config = format!(
            "# fleet-testbed host {name}\n\
             ListenAddress {ip}\n\
             Port 22\n\
             HostKey {key}\n\
             PidFile /run/sshd.pid\n\
             PermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\n\
             AuthorizedKeysFile {authorized}\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             StrictModes no\n\
             PrintMotd no\n\
             MaxSessions 100\n\
             MaxStartups 100:30:200\n\
             Subsystem sftp /usr/lib/openssh/sftp-server\n",
            name = spec.name,
            key = key.display(),
            authorized = authorized.display(),
        );
        write(&dir.join("ssh/sshd_config"), &config)?;

        // Network: a veth from the bridge into the host's namespace.
        let outside = format!("flt{n}h{i}");
        let inside = format!("flt{n}p{i}");
        run(&mut cmd("ip", ["netns", "add", &netns]))?;
        run(&mut cmd(
            "ip",
            [
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ],
        ))?;
        run(&mut cmd("ip", ["link", "set", &inside, "netns", &netns]))?;
        run(&mut cmd(
            "ip",
            [
                "link",
                "set",
                &outside,
                "master",
                &instance::bridge_name(n),
                "up",
            ],
        ))?;
        let ipn = |args: &[&str]| {
            let mut c = cmd("ip", ["-n", netns.as_str()]);
            c.args(args);
            run(&mut c)
        };
        ipn(&["link", "set", &inside, "name", "eth0"])?;
        ipn(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        ipn(&["link", "set", "eth0", "up"])?;
        ipn(&["link", "set", "lo", "up"])?;
        ipn(&["route", "add", "default", "via", &format!("172.31.{n}.1")])?;
        if let Some(rate) = spec.rate_mbit {
            let tbf = |dev: &str, netns: Option<&str>| {
                let mut c = Command::new("tc");
                if let Some(ns) = netns {
                    c.args(["-n", ns]);
                }
                c.args(["qdisc", "add", "dev", dev, "root", "tbf", "rate"])
                    .arg(format!("{rate}mbit"))
                    .args(["burst", "64kb", "latency", "200ms"]);
                run(&mut c)
            };
            tbf(&outside, None)?; // deployer → host
            tbf("eth0", Some(&netns))?; // host → deployer
        }

        // Mounts: a holder process owns the host's private mount namespace.
        let nix_mount = match spec.nix_tmpfs_mb {
            Some(mb) => format!("mount -t tmpfs -o size={mb}m,mode=0755 fleet-testbed-nix /nix"),
            None => format!("mount --bind '{}' /nix", dir.join("nix").display()),
        };
        let uname = crate::uname::machine_shim(&dir, &spec.system)?.unwrap_or_default();
        let script = format!(
            "set -e\n\
             {nix_mount}\n\
             {uname}\n\
             mount -t tmpfs -o mode=0755 fleet-testbed-run /run\n\
             mkdir -p /run/sshd\n\
             mount --bind '{etc}' /etc/nixos\n\
             mount --bind '{boot}' /boot\n\
             mount --bind '{root}' /root\n\
             mount --bind '{home_dir}' '{home}'\n\
             {userland_mounts}\
             echo ready\n\
             exec sleep infinity\n",
            etc = dir.join("etc-nixos").display(),
            boot = dir.join("boot").display(),
            root = dir.join("root").display(),
            home_dir = dir.join("home").display(),
            userland_mounts = root
                .map(|r| userland::host_mounts(r, &home))
                .unwrap_or_default(),
        );
        let mut c = cmd("ip", ["netns", "exec", &netns]);
        c.args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut holder = c.spawn().map_err(|source| Error::Spawn {
            command: describe(&c),
            source,
        })?;
        let holder_pid = holder.id();
        let mut line = String::new();
        if let Some(stdout) = holder.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        if line.trim() != "ready" {
            let _ = holder.kill();
            let out = holder.wait_with_output();
            let stderr = out
                .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
                .unwrap_or_default();
            return Err(Error::HostSetup {
                host: spec.name.clone(),
                stderr,
            });
        }
        drop(holder.stderr.take());
        self.runtimes.push(Runtime {
            dir,
            holder: Mutex::new(Some(holder)),
            holder_pid,
            sshd: Arc::new(Mutex::new(None)),
            boots: Arc::new(AtomicU64::new(0)),
            root: root.cloned(),
        });
        Ok(SimHost {
            name: spec.name.clone(),
            address: IpAddr::V4(ip),
            port: 22,
            system: spec.system.clone(),
            login: spec.login,
            user: match spec.login {
                Login::Root => "root".into(),
                Login::SudoPassword => SUDO_USER.into(),
            },
            host_key_line,
            netns,
            rate_mbit: spec.rate_mbit,
            nix_tmpfs_mb: spec.nix_tmpfs_mb,
            tags: spec.tags.clone(),
            userland: spec.userland,
        })
    }

    pub(crate) fn index(&self, name: &str) -> Result<usize> {
        self.hosts
            .iter()
            .position(|h| h.name == name)
            .ok_or_else(|| Error::UnknownHost { name: name.into() })
    }

    fn spawn_sshd(&self, i: usize) -> Result<()> {
        let rt = &self.runtimes[i];
        let mut guard = rt.sshd.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(child) = guard.as_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                return Ok(());
            }
        }
        let mut c = self.sshd_command(i);
        let child = c.spawn().map_err(|source| Error::Spawn {
            command: describe(&c),
            source,
        })?;
        *guard = Some(child);
        Ok(())
    }

    /// The command that starts host `i`'s sshd (not yet spawned).
    pub(crate) fn sshd_command(&self, i: usize) -> Command {
        let rt = &self.runtimes[i];
        let mut c = self.nsenter(i);
        c.args(["/usr/sbin/sshd", "-D", "-f"])
            .arg(rt.dir.join("ssh/sshd_config"))
            .arg("-E")
            .arg(rt.dir.join("sshd.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    pub(crate) fn wait_sshd(&self, i: usize) -> Result<()> {
        let host = &self.hosts[i];
        let addr = SocketAddr::new(host.address, host.port);
        let deadline = Instant::now() + SSHD_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            let exited = {
                let mut guard = self.runtimes[i]
                    .sshd
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                guard
                    .as_mut()
                    .map(|c| !matches!(c.try_wait(), Ok(None)))
                    .unwrap_or(true)
            };
            if exited || Instant::now() > deadline {
                return Err(Error::SshdTimeout {
                    host: host.name.clone(),
                    address: addr.to_string(),
                    secs: SSHD_TIMEOUT.as_secs(),
                    log: fs::read_to_string(self.runtimes[i].dir.join("sshd.log"))
                        .unwrap_or_default(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `nsenter` into host `i`'s mount and network namespaces (and `chroot` into its
    /// userland's root, if any), with a clean environment.
    pub(crate) fn nsenter(&self, i: usize) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t")
            .arg(self.runtimes[i].holder_pid.to_string())
            .args(["-m", "-n", "--"])
            .env_clear()
            .env("PATH", HOST_PATH)
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8");
        if let Some(root) = &self.runtimes[i].root {
            c.arg("chroot").arg(root);
        }
        c
    }

    /// The instance number (`0..200`): bridge `fltbr<n>`, subnet `172.31.<n>.0/24`.
    pub fn instance(&self) -> u32 {
        self.number
    }

    /// `/tmp/fleet-testbed-<n>`: keys, known_hosts, and one directory per host.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The deployer's address on the bridge (`172.31.<n>.1`).
    pub fn deployer_address(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(172, 31, self.number as u8, 1))
    }

    /// How long starting took.
    pub fn timings(&self) -> StartTimings {
        self.timings
    }

    /// All hosts, in the order they were given.
    pub fn hosts(&self) -> &[SimHost] {
        &self.hosts
    }

    /// The host called `name`. Panics when there is none (a bug in the test).
    pub fn host(&self, name: &str) -> &SimHost {
        self.try_host(name)
            .unwrap_or_else(|| panic!("no host `{name}` in this testbed"))
    }

    /// The host called `name`, if any.
    pub fn try_host(&self, name: &str) -> Option<&SimHost> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The private key (ed25519, no passphrase) root and the sudo user log in with.
    pub fn client_key_path(&self) -> &Path {
        &self.client_key
    }

    /// A `known_hosts` file with every host's key, for strict host key checking.
    pub fn known_hosts_path(&self) -> &Path {
        &self.known_hosts
    }

    /// The non-root user (password-protected sudo) on every host.
    pub fn sudo_user(&self) -> &str {
        SUDO_USER
    }

    /// The sudo user's password.
    pub fn sudo_password(&self) -> &str {
        SUDO_PASSWORD
    }

    /// The `NIX_CONFIG` a deployer process needs: no substituters, no sandbox, and
    /// `extra-platforms` as configured.
    pub fn nix_env(&self) -> Vec<(String, String)> {
        vec![(
            "NIX_CONFIG".into(),
            nix_config(self.extra_platforms.as_deref()),
        )]
    }

    /// Options for the stock OpenSSH client: the key, the known_hosts file, strict checking,
    /// batch mode.
    pub fn ssh_options(&self) -> Vec<String> {
        vec![
            "-i".into(),
            self.client_key.display().to_string(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "ConnectTimeout=10".into(),
        ]
    }

    /// [`Testbed::ssh_options`] joined for `NIX_SSHOPTS`.
    pub fn nix_sshopts(&self) -> String {
        self.ssh_options().join(" ")
    }

    /// A stock `ssh` command to `user@host` that runs `remote_cmd` (not yet spawned).
    pub fn ssh(&self, host: &str, user: &str, remote_cmd: &str) -> Command {
        let h = self.host(host);
        let mut c = Command::new("ssh");
        c.args(self.ssh_options())
            .arg("-p")
            .arg(h.port.to_string())
            .arg(format!("{user}@{}", h.address))
            .arg("--")
            .arg(remote_cmd);
        c
    }

    /// Runs `sh -c <shell_cmd>` as root inside the host's namespaces (not over SSH), with a
    /// clean environment. Any exit status is returned, not turned into an error.
    pub fn exec(&self, host: &str, shell_cmd: &str) -> Result<Output> {
        let i = self.index(host)?;
        let mut c = self.nsenter(i);
        c.args(["sh", "-c", shell_cmd]);
        output(&mut c)
    }

    /// [`Testbed::exec`], requiring success; returns stdout.
    pub fn exec_ok(&self, host: &str, shell_cmd: &str) -> Result<String> {
        let i = self.index(host)?;
        let mut c = self.nsenter(i);
        c.args(["sh", "-c", shell_cmd]);
        let out = run(&mut c)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The host's own directory on the deployer (`<state_dir>/<host>`): `nix/` (its `/nix`
    /// unless tmpfs), `etc-nixos/`, `boot/`, `ssh/`, `sshd.log`.
    pub fn host_dir(&self, host: &str) -> Result<&Path> {
        Ok(&self.runtimes[self.index(host)?].dir)
    }

    /// Stops the host's sshd and its sessions; the host keeps its namespaces and store.
    pub fn stop_sshd(&self, host: &str) -> Result<()> {
        let i = self.index(host)?;
        if let Some(mut child) = self.runtimes[i]
            .sshd
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Sessions are separate sshd processes: end them too, like a host going away.
        for pid in instance::netns_pids(&self.hosts[i].netns) {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            // OpenSSH 10 runs sessions as `sshd-session` (and `sshd-auth`).
            if comm.trim() == "sshd" || comm.starts_with("sshd-") {
                // SAFETY: kill(2) on a process in this host's namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        Ok(())
    }

    /// Starts the host's sshd again (no-op if it runs) and waits until it listens.
    pub fn start_sshd(&self, host: &str) -> Result<()> {
        let i = self.index(host)?;
        self.spawn_sshd(i)?;
        self.wait_sshd(i)
    }

    /// Whether the host's sshd (the listener started by the testbed) runs.
    pub fn sshd_running(&self, host: &str) -> Result<bool> {
        let i = self.index(host)?;
        let mut guard = self.runtimes[i]
            .sshd
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Ok(guard
            .as_mut()
            .map(|c| matches!(c.try_wait(), Ok(None)))
            .unwrap_or(false))
    }

    /// Fills the host's tmpfs `/nix` to the last byte (needs [`HostSpec::nix_tmpfs_mb`]).
    pub fn fill_disk(&self, host: &str) -> Result<()> {
        let i = self.index(host)?;
        if self.hosts[i].nix_tmpfs_mb.is_none() {
            return Err(Error::NoTmpfs { host: host.into() });
        }
        self.exec(
            host,
            &format!("dd if=/dev/zero of={FILL_FILE} bs=1M 2>/dev/null; sync"),
        )?;
        Ok(())
    }

    /// Undoes [`Testbed::fill_disk`].
    pub fn free_disk(&self, host: &str) -> Result<()> {
        self.exec_ok(host, &format!("rm -f {FILL_FILE}"))?;
        Ok(())
    }

    /// A `fleet.toml` for all hosts: one pin `standin` (a `path` pin of `nixpkgs`), the
    /// testbed's key and known_hosts, each host's address, user, sudo mode, system, tags,
    /// pinned host key, and `config = config_for(host)`.
    pub fn fleet_toml(&self, nixpkgs: &Path, config_for: impl Fn(&SimHost) -> PathBuf) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Written by fleet-testbed (instance {}).\n",
            self.number
        );
        let _ = writeln!(
            s,
            "[pins.standin]\npath = {}\n",
            toml_str(&nixpkgs.display().to_string())
        );
        let _ = writeln!(
            s,
            "[defaults]\npin = \"standin\"\nidentity-file = {}\nknown-hosts = {}\n",
            toml_str(&self.client_key.display().to_string()),
            toml_str(&self.known_hosts.display().to_string())
        );
        for h in &self.hosts {
            let _ = writeln!(s, "[hosts.{}]", h.name);
            let _ = writeln!(s, "address = \"{}\"", h.address);
            let _ = writeln!(s, "system = {}", toml_str(&h.system));
            let _ = writeln!(s, "user = {}", toml_str(&h.user));
            if h.login == Login::SudoPassword {
                let _ = writeln!(s, "sudo = \"password\"");
            }
            let _ = writeln!(
                s,
                "config = {}",
                toml_str(&config_for(h).display().to_string())
            );
            let tags: Vec<String> = h.tags.iter().map(|t| toml_str(t)).collect();
            let _ = writeln!(s, "tags = [{}]", tags.join(", "));
            let _ = writeln!(s, "host-key = {}\n", toml_str(&h.host_key_line));
        }
        s
    }

    /// Stops everything and removes every trace: processes, namespaces, links, the state
    /// directory, the lock. Checks that nothing is left and says what is.
    pub fn teardown(mut self) -> Result<()> {
        self.teardown_inner()
    }

    fn teardown_inner(&mut self) -> Result<()> {
        let Some(lock) = self.lock.take() else {
            return Ok(());
        };
        for (host, rt) in self.hosts.iter().zip(&self.runtimes) {
            rt.boots.fetch_add(1, Ordering::SeqCst); // no background boot starts sshd now
            for child in [&*rt.sshd, &rt.holder] {
                if let Some(mut c) = child.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
            instance::kill_netns_processes(&host.netns);
        }
        // Hosts whose setup failed half-way are not in `hosts`: sweep by name.
        let result = instance::remove_leftovers(self.number);
        let left = instance::leftovers(self.number);
        lock.release();
        result?;
        if left.is_empty() {
            Ok(())
        } else {
            Err(Error::Leftovers {
                instance: self.number,
                leftovers: left,
            })
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if let Err(e) = self.teardown_inner() {
            eprintln!("fleet-testbed: teardown on drop: {e}");
        }
    }
}

/// The `NIX_CONFIG` value for a deployer: no substituters, no sandbox, optional
/// `extra-platforms`.
pub fn nix_config(extra_platforms: Option<&str>) -> String {
    let mut s = String::from("substituters =\nsandbox = false");
    if let Some(p) = extra_platforms {
        let _ = write!(s, "\nextra-platforms = {p}");
    }
    s
}

/// A TOML basic string holding exactly `s` (quotes, backslashes and control characters escaped),
/// for writing paths and names into fleet.toml.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `ssh-ed25519 AAAA... comment` → `ssh-ed25519 AAAA...`.
fn key_line(pub_file: &str) -> String {
    pub_file
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn keygen(path: &Path, comment: &str) -> Result<()> {
    let mut c = cmd(
        "ssh-keygen",
        ["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"],
    );
    c.arg(path);
    run(&mut c).map(drop)
}

fn mkdir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|source| Error::Io {
        action: "creating",
        path: path.into(),
        source,
    })
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| Error::Io {
        action: "reading",
        path: path.into(),
        source,
    })
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(|source| Error::Io {
        action: "writing",
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nix_config_with_and_without_extra_platforms() {
        assert_eq!(
            nix_config(Some("aarch64-linux")),
            "substituters =\nsandbox = false\nextra-platforms = aarch64-linux"
        );
        assert_eq!(nix_config(None), "substituters =\nsandbox = false");
    }

    #[test]
    fn key_lines_drop_the_comment() {
        assert_eq!(key_line("ssh-ed25519 AAAAC3 pi1\n"), "ssh-ed25519 AAAAC3");
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_str("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
