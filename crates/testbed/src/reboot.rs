//! Simulated reboots: [`Testbed::reboot`] and friends.
//!
//! A reboot of a simulated host ends every process of the host but the holder of its mount
//! namespace (sshd, sessions, anything `exec` started), gives it an empty `/run`, "boots" the
//! boot entry systemd-boot would (a one-shot entry once, else `default` of
//! `/boot/loader/loader.conf`; each entry names its system on a `toplevel` line), points
//! `/run/booted-system` and `/run/current-system` at that system (and, when it runs the stand-in's
//! systemd, `fleet.systemd = true`, creates `/run/systemd/system` as PID 1 would), and starts sshd again after a
//! delay, unless the booted system was built with `fleet.bootBreaksSshd = true` (the marker file
//! [`BOOT_BREAKS_SSHD_MARKER`] in its toplevel). The machine's own `reboot` is never involved.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cmd::{describe, output};
use crate::error::{Error, Result};
use crate::instance;
use crate::testbed::Testbed;

/// How long a rebooted host takes to start sshd, by default.
pub const DEFAULT_SSHD_DELAY: Duration = Duration::from_secs(1);
/// A toplevel holding this file boots without sshd (the stand-in's `fleet.bootBreaksSshd`).
pub const BOOT_BREAKS_SSHD_MARKER: &str = "fleet-standin-boot-breaks-sshd";
/// How long a rebooted sshd may take to listen once started.
const SSHD_LISTEN_TIMEOUT: Duration = Duration::from_secs(15);

/// What a reboot booted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebooted {
    pub host: String,
    /// The boot entry (`nixos-generation-3.conf`), `None` when `/boot` has none to boot.
    pub entry: Option<String>,
    /// Whether the entry was the one-shot entry (`bootctl set-oneshot`), now consumed.
    pub oneshot: bool,
    /// The system booted (`/run/booted-system` and `/run/current-system` point at it).
    pub toplevel: Option<String>,
    /// Whether sshd comes back (false: the booted system breaks sshd, or its toplevel is missing
    /// from the host's store).
    pub sshd: bool,
    /// How many processes of the host the reboot ended.
    pub processes_ended: usize,
}

/// A reboot whose sshd comes back in the background ([`Testbed::reboot_nowait`]).
#[derive(Debug)]
pub struct Booting {
    pub rebooted: Rebooted,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Booting {
    /// Waits until sshd listens again (at once when it does not come back).
    pub fn wait(mut self) -> Result<Rebooted> {
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| Error::Reboot {
                host: self.rebooted.host.clone(),
                reason: "the boot thread panicked".into(),
            })??;
        }
        Ok(self.rebooted.clone())
    }
}

impl Testbed {
    /// Reboots `host` and waits until it is back (sshd listens after [`DEFAULT_SSHD_DELAY`]),
    /// or, when the booted system breaks sshd, until it has booted.
    pub fn reboot(&self, host: &str) -> Result<Rebooted> {
        self.reboot_with_delay(host, DEFAULT_SSHD_DELAY)
    }

    /// [`Testbed::reboot`] with another delay before sshd starts.
    pub fn reboot_with_delay(&self, host: &str, sshd_delay: Duration) -> Result<Rebooted> {
        self.reboot_nowait(host, sshd_delay)?.wait()
    }

    /// Reboots `host` and returns as soon as it has booted; sshd starts `sshd_delay` later in a
    /// background thread ([`Booting::wait`] waits for it). A later reboot or the teardown cancels
    /// a start that has not happened yet.
    pub fn reboot_nowait(&self, host: &str, sshd_delay: Duration) -> Result<Booting> {
        let i = self.index(host)?;
        let rt = &self.runtimes[i];
        let generation = rt.boots.fetch_add(1, Ordering::SeqCst) + 1;
        let processes_ended = self.power_off(i);
        let boot = rt.dir.join("boot");
        let (entry, oneshot, toplevel) = choose_entry(&boot).map_err(|reason| Error::Reboot {
            host: host.into(),
            reason,
        })?;
        let script = format!(
            "set -e\n\
             umount -l /run\n\
             mount -t tmpfs -o mode=0755 fleet-testbed-run /run\n\
             mkdir -p /run/sshd\n\
             for l in $(ip -o link show | awk -F': ' '{{ sub(/@.*/, \"\", $2); print $2 }}'); do\n\
               ip link set dev \"$l\" up\n\
             done\n\
             ip route replace default via {gateway} 2>/dev/null || true\n\
             top=\"$1\"\n\
             [ -n \"$top\" ] || exit 0\n\
             if [ ! -e \"$top/nixos-version\" ]; then echo missing; exit 0; fi\n\
             ln -s \"$top\" /run/booted-system\n\
             ln -s \"$top\" /run/current-system\n\
             if grep -q \"^network='down'\" \"$top/bin/switch-to-configuration\" 2>/dev/null; then\n\
               mkdir -p /run/fleet-standin\n\
               for l in $(ip -o link show | awk -F': ' '{{ sub(/@.*/, \"\", $2); print $2 }}'); do\n\
                 [ \"$l\" = lo ] && continue\n\
                 echo \"$l\" >> /run/fleet-standin/links-down\n\
                 ip link set dev \"$l\" down\n\
               done\n\
             fi\n\
             if grep -q \"^systemd='1'\" \"$top/bin/switch-to-configuration\" 2>/dev/null; then\n\
               mkdir -p /run/systemd/system\n\
             fi\n\
             if [ -e \"$top/{BOOT_BREAKS_SSHD_MARKER}\" ]; then echo nosshd; fi\n",
            gateway = self.deployer_address(),
        );
        let mut c = self.nsenter(i);
        c.args(["sh", "-c", &script, "sh", toplevel.as_deref().unwrap_or("")]);
        let out = output(&mut c)?;
        if !out.status.success() {
            return Err(Error::Reboot {
                host: host.into(),
                reason: format!(
                    "`{}` failed: {}",
                    describe(&c),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        let said = String::from_utf8_lossy(&out.stdout);
        let sshd = !said.lines().any(|l| l == "nosshd" || l == "missing");
        let rebooted = Rebooted {
            host: host.into(),
            entry,
            oneshot,
            toplevel: if said.lines().any(|l| l == "missing") {
                None
            } else {
                toplevel
            },
            sshd,
            processes_ended,
        };
        if !sshd {
            return Ok(Booting {
                rebooted,
                thread: None,
            });
        }
        let mut command = self.sshd_command(i);
        let slot = rt.sshd.clone();
        let boots = rt.boots.clone();
        let h = &self.hosts[i];
        let addr = SocketAddr::new(h.address, h.port);
        let name = host.to_owned();
        let log = rt.dir.join("sshd.log");
        let thread = std::thread::spawn(move || -> Result<()> {
            std::thread::sleep(sshd_delay);
            {
                let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
                if boots.load(Ordering::SeqCst) != generation {
                    return Ok(()); // rebooted again, or torn down
                }
                let child = command.spawn().map_err(|source| Error::Spawn {
                    command: describe(&command),
                    source,
                })?;
                *guard = Some(child);
            }
            let deadline = Instant::now() + SSHD_LISTEN_TIMEOUT;
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if boots.load(Ordering::SeqCst) != generation {
                    return Ok(()); // rebooted again, or torn down, while starting
                }
                if Instant::now() > deadline {
                    return Err(Error::SshdTimeout {
                        host: name,
                        address: addr.to_string(),
                        secs: SSHD_LISTEN_TIMEOUT.as_secs(),
                        log: fs::read_to_string(&log).unwrap_or_default(),
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        });
        Ok(Booting {
            rebooted,
            thread: Some(thread),
        })
    }

    /// Ends every process of host `i` but the holder; returns how many there were.
    fn power_off(&self, i: usize) -> usize {
        let rt = &self.runtimes[i];
        let mut sshd = 0;
        if let Some(mut child) = rt.sshd.lock().unwrap_or_else(|e| e.into_inner()).take() {
            if matches!(child.try_wait(), Ok(None)) {
                sshd = 1;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let holder = rt.holder_pid as i32;
        let netns = &self.hosts[i].netns;
        let mut ended = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids: Vec<i32> = instance::netns_pids(netns)
                .into_iter()
                .filter(|p| *p != holder)
                .collect();
            if pids.is_empty() || Instant::now() > deadline {
                return ended.len() + sshd;
            }
            for pid in pids {
                ended.insert(pid);
                // SAFETY: kill(2) on a process in this host's network namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The entry systemd-boot boots from `boot` (the host's `/boot`): the one-shot entry
/// (`loader/oneshot`, removed: it is consumed), else `default` of `loader/loader.conf`.
/// Returns (entry, whether it was the one-shot, its `toplevel`).
fn choose_entry(boot: &Path) -> Result<(Option<String>, bool, Option<String>), String> {
    let loader = boot.join("loader");
    let oneshot_file = loader.join("oneshot");
    let oneshot = fs::read_to_string(&oneshot_file)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    if oneshot.is_some() {
        fs::remove_file(&oneshot_file)
            .map_err(|e| format!("removing {}: {e}", oneshot_file.display()))?;
    }
    let default = fs::read_to_string(loader.join("loader.conf"))
        .ok()
        .and_then(|conf| {
            conf.lines()
                .find_map(|l| l.strip_prefix("default ").map(|v| v.trim().to_owned()))
        });
    let (entry, is_oneshot) = match (oneshot, default) {
        (Some(e), _) => (e, true),
        (None, Some(e)) => (e, false),
        (None, None) => return Ok((None, false, None)),
    };
    let file = loader.join("entries").join(&entry);
    let text = fs::read_to_string(&file)
        .map_err(|e| format!("boot entry {} (from /boot/loader): {e}", file.display()))?;
    let toplevel = text
        .lines()
        .find_map(|l| l.strip_prefix("toplevel ").map(|v| v.trim().to_owned()));
    if toplevel.is_none() {
        return Err(format!(
            "boot entry {} has no `toplevel` line",
            file.display()
        ));
    }
    Ok((Some(entry), is_oneshot, toplevel))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot_dir(loader_conf: Option<&str>, oneshot: Option<&str>) -> tempdir::Dir {
        let d = tempdir::Dir::new();
        let loader = d.0.join("loader");
        fs::create_dir_all(loader.join("entries")).unwrap();
        for (name, top) in [("a.conf", "/nix/store/a"), ("b.conf", "/nix/store/b")] {
            fs::write(
                loader.join("entries").join(name),
                format!("title NixOS\ntoplevel {top}\n"),
            )
            .unwrap();
        }
        if let Some(c) = loader_conf {
            fs::write(loader.join("loader.conf"), c).unwrap();
        }
        if let Some(o) = oneshot {
            fs::write(loader.join("oneshot"), o).unwrap();
        }
        d
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "fleet-testbed-reboot-unit-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn default_entry_then_oneshot_once() {
        let d = boot_dir(Some("timeout 5\ndefault a.conf\n"), None);
        assert_eq!(
            choose_entry(&d.0).unwrap(),
            (Some("a.conf".into()), false, Some("/nix/store/a".into()))
        );
        let d = boot_dir(Some("default a.conf\n"), Some("b.conf\n"));
        assert_eq!(
            choose_entry(&d.0).unwrap(),
            (Some("b.conf".into()), true, Some("/nix/store/b".into()))
        );
        assert_eq!(choose_entry(&d.0).unwrap().0.as_deref(), Some("a.conf"));
    }

    #[test]
    fn no_loader_conf_boots_nothing_and_a_bad_entry_is_an_error() {
        let d = boot_dir(None, None);
        assert_eq!(choose_entry(&d.0).unwrap(), (None, false, None));
        let d = boot_dir(Some("default gone.conf\n"), None);
        assert!(choose_entry(&d.0).unwrap_err().contains("gone.conf"));
    }
}
