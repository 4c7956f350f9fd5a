//! What a test asks for ([`HostSpec`]) and what it gets ([`SimHost`]).

use std::net::IpAddr;

use crate::userland::Userland;

/// How fleet logs in to a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Login {
    /// `root` with the testbed's key.
    Root,
    /// The sudo user ([`crate::SUDO_USER`]) with the testbed's key; `sudo` asks for
    /// [`crate::SUDO_PASSWORD`].
    SudoPassword,
}

/// One simulated host to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// A DNS label, at most 40 characters (it becomes part of the namespace name).
    pub name: String,
    /// The Nix system the host claims to be (`x86_64-linux`, `aarch64-linux`); fleet builds for
    /// it. The simulated host itself runs on this machine.
    pub system: String,
    pub login: Login,
    /// Link rate limit in Mbit/s, both directions (`tc tbf`), to model a slow link.
    pub rate_mbit: Option<u32>,
    /// Make `/nix` a tmpfs of this many MiB (instead of a directory on disk), so a test can fill it.
    pub nix_tmpfs_mb: Option<u32>,
    /// Tags written into `fleet.toml` by [`crate::Testbed::fleet_toml`].
    pub tags: Vec<String>,
    /// The programs (Nix, sshd, sh, sudo) the host runs: this machine's, or a Debian root's.
    pub userland: Userland,
    /// The host's own `/etc/nix/nix.conf` (its substituters, trusted keys, `extra-platforms`
    /// of a builder); `None`: the host sees no nix.conf (Nix's defaults). Hosts on this
    /// machine's userland only.
    pub nix_conf: Option<String>,
}

impl HostSpec {
    /// An `x86_64-linux` host reached as root, no rate limit, `/nix` on disk.
    pub fn new(name: impl Into<String>) -> Self {
        HostSpec {
            name: name.into(),
            system: "x86_64-linux".into(),
            login: Login::Root,
            rate_mbit: None,
            nix_tmpfs_mb: None,
            tags: Vec::new(),
            userland: Userland::Machine,
            nix_conf: None,
        }
    }

    /// Gives the host its own `/etc/nix/nix.conf` with this text
    /// ([`crate::Testbed::set_nix_conf`] changes it later).
    pub fn nix_conf(mut self, text: impl Into<String>) -> Self {
        self.nix_conf = Some(text.into());
        self
    }

    /// Runs the host's sshd (so every session, `sudo`, and [`crate::Testbed::exec`]) in the
    /// root of `userland` (another Nix and OpenSSH), on the host's own store.
    pub fn userland(mut self, userland: Userland) -> Self {
        self.userland = userland;
        self
    }

    /// Sets the Nix system.
    pub fn system(mut self, system: impl Into<String>) -> Self {
        self.system = system.into();
        self
    }

    /// Reach this host as the sudo user with a password instead of root.
    pub fn sudo_password(mut self) -> Self {
        self.login = Login::SudoPassword;
        self
    }

    /// Limits the link to `mbit` Mbit/s in both directions.
    pub fn rate_mbit(mut self, mbit: u32) -> Self {
        self.rate_mbit = Some(mbit);
        self
    }

    /// Makes `/nix` a tmpfs of `mb` MiB.
    pub fn nix_tmpfs_mb(mut self, mb: u32) -> Self {
        self.nix_tmpfs_mb = Some(mb);
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    pub(crate) fn problem(&self) -> Option<&'static str> {
        let n = &self.name;
        if n.is_empty() || n.len() > 40 {
            return Some("names are 1 to 40 characters");
        }
        if !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || n.starts_with('-')
            || n.ends_with('-')
        {
            return Some("names use [a-zA-Z0-9-] and do not start or end with `-`");
        }
        if self.nix_conf.is_some() && self.userland != Userland::Machine {
            return Some("nix_conf works only on this machine's userland");
        }
        if self.rate_mbit == Some(0) || self.nix_tmpfs_mb == Some(0) {
            return Some("rate and tmpfs size must be positive");
        }
        None
    }
}

/// A running simulated host, as the deployer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimHost {
    pub name: String,
    /// Its address on the instance's bridge (`172.31.<instance>.<10 + index>`).
    pub address: IpAddr,
    /// sshd's port (22).
    pub port: u16,
    pub system: String,
    pub login: Login,
    /// The user fleet logs in as: `root` or [`crate::SUDO_USER`].
    pub user: String,
    /// Its host key as `ssh-ed25519 AAAA...` (type and base64, no comment).
    pub host_key_line: String,
    /// Its network namespace (`flt<instance>-<name>`); `ip netns exec` works with it.
    pub netns: String,
    pub rate_mbit: Option<u32>,
    pub nix_tmpfs_mb: Option<u32>,
    pub tags: Vec<String>,
    pub userland: Userland,
}

impl SimHost {
    /// `user@address`, for stock `ssh` and `nix-copy-closure`.
    pub fn ssh_target(&self) -> String {
        format!("{}@{}", self.user, self.address)
    }
}
