//! Reaching into a running host: commands in its namespaces, stock `ssh`, the deployer's
//! `NIX_CONFIG`, a full disk.

use std::fmt::Write as _;
use std::process::{Command, Output};

use crate::cmd::{output, run};
use crate::error::{Error, Result};
use crate::testbed::Testbed;

/// The PATH inside a host for [`Testbed::exec`].
const HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Where a filled disk's filler file goes.
const FILL_FILE: &str = "/nix/.fleet-testbed-fill";

impl Testbed {
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

    /// Runs the host's garbage collector, `nix-collect-garbage` with `args` (e.g. `-d`), as the
    /// host's own `nix.gc` would, in a PID namespace of its own. Nix also keeps every store path
    /// named in any `/proc/*/environ`, `maps`, `fd` or `exe` it can see ("runtime roots"), and
    /// the simulated hosts share the machine's `/proc`: without its own one, a host's collection
    /// keeps paths that a process of another test (another host, the deployer) happens to name,
    /// which the same configuration in two tests makes likely. Temporary roots (`temproots/`,
    /// held by a file lock, not a PID) and every root on disk still count.
    pub fn collect_garbage(&self, host: &str, args: &str) -> Result<String> {
        self.exec_ok(
            host,
            &format!("unshare --pid --fork --mount-proc nix-collect-garbage {args} 2>&1"),
        )
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
}
