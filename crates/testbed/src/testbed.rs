//! [`Testbed`]: start N simulated hosts, use them, tear them down.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::host::{HostSpec, SimHost};
use crate::instance::{self, InstanceLock};
use crate::prereq::{ensure_prerequisites, SUDO_PASSWORD, SUDO_USER};
use crate::setup::mkdir;
use crate::userland;

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
    pub(crate) holder: Mutex<Option<Child>>,
    pub(crate) holder_pid: u32,
    /// Shared with a background boot ([`crate::Booting`]), which starts sshd later.
    pub(crate) sshd: Arc<Mutex<Option<Child>>>,
    /// Bumped by every reboot and by teardown: a background boot of an older generation does
    /// not start sshd.
    pub(crate) boots: Arc<AtomicU64>,
    /// The userland root its programs run in (`None`: the machine's own).
    pub(crate) root: Option<PathBuf>,
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
    pub(crate) lock: Option<InstanceLock>,
    pub(crate) number: u32,
    pub(crate) state_dir: PathBuf,
    pub(crate) hosts: Vec<SimHost>,
    pub(crate) runtimes: Vec<Runtime>,
    pub(crate) extra_platforms: Option<String>,
    pub(crate) client_key: PathBuf,
    pub(crate) known_hosts: PathBuf,
    pub(crate) timings: StartTimings,
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

    pub(crate) fn index(&self, name: &str) -> Result<usize> {
        self.hosts
            .iter()
            .position(|h| h.name == name)
            .ok_or_else(|| Error::UnknownHost { name: name.into() })
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

    /// The host's own directory on the deployer (`<state_dir>/<host>`): `nix/` (its `/nix`
    /// unless tmpfs), `etc-nixos/`, `boot/`, `ssh/`, `sshd.log`.
    pub fn host_dir(&self, host: &str) -> Result<&Path> {
        Ok(&self.runtimes[self.index(host)?].dir)
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
