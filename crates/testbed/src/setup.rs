//! Starting a host: its network namespace and veth, its private mounts (the holder process),
//! its sshd configuration and host key.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use crate::cmd::{cmd, describe, run};
use crate::error::{Error, Result};
use crate::host::{HostSpec, Login, SimHost};
use crate::instance;
use crate::prereq::{sudo_user_entry, SUDO_USER};
use crate::testbed::{Runtime, Testbed};
use crate::userland;

impl Testbed {
    pub(crate) fn setup(&mut self, specs: &[HostSpec], roots: &userland::Roots) -> Result<()> {
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
             AuthorizedKeysFile {authorized} .ssh/authorized_keys\n\
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
        let etc_nix = crate::cache::etc_nix_mount(&dir, spec.nix_conf.as_deref())?;
        let script = format!(
            "set -e\n\
             {nix_mount}\n\
             {uname}\n\
             {etc_nix}\n\
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

pub(crate) fn mkdir(path: &Path) -> Result<()> {
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

pub(crate) fn write(path: &Path, text: &str) -> Result<()> {
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
    fn key_lines_drop_the_comment() {
        assert_eq!(key_line("ssh-ed25519 AAAAC3 pi1\n"), "ssh-ed25519 AAAAC3");
    }
}
