//! A host's sshd: start, wait until it listens, stop (with its sessions), restart.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::describe;
use crate::error::{Error, Result};
use crate::instance;
use crate::testbed::Testbed;

/// How long sshd may take to listen.
const SSHD_TIMEOUT: Duration = Duration::from_secs(15);

impl Testbed {
    pub(crate) fn spawn_sshd(&self, i: usize) -> Result<()> {
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
}
