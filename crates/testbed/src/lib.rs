//! fleet-testbed: a simulated fleet on one machine, for fleet's tests, demo and benchmarks.
//!
//! Each simulated host is a network namespace (a veth into the instance's bridge, its own
//! address) plus a private mount namespace with its own `/nix` (an empty store and database),
//! `/run` (tmpfs), `/etc/nixos` and `/boot`, and a real OpenSSH `sshd` with its own host key.
//! Root logs in with the testbed's key; [`SUDO_USER`] logs in with the same key and needs
//! [`SUDO_PASSWORD`] for `sudo`. See `docs/testing.md`.
//!
//! ```no_run
//! use fleet_testbed::{HostSpec, Testbed};
//! let tb = Testbed::start([HostSpec::new("pi1").system("aarch64-linux"),
//!                          HostSpec::new("nas").sudo_password()])?;
//! let out = tb.exec_ok("pi1", "ls /nix/store 2>/dev/null | wc -l")?;
//! tb.teardown()?;
//! # Ok::<(), fleet_testbed::Error>(())
//! ```
//!
//! Several testbeds (in one process or many) never collide: each takes a free instance number
//! `n` (a `flock` on `/run/fleet-testbed/<n>.lock`) and uses only names and addresses derived
//! from it.
//!
//! # Layout
//! - `testbed.rs`: [`Testbed`] and its builder: start, accessors, tear down.
//! - `setup.rs`: starting one host: network namespace, veth, private mounts, sshd config.
//! - `sshd.rs`: a host's sshd: start, wait, stop, restart.
//! - `access.rs`: commands inside a host, stock `ssh`, the deployer's `NIX_CONFIG`, full disks.
//! - `cache.rs`: a signed binary cache served on the bridge ([`BinaryCache`]), hosts' own
//!   nix.conf, remote builder lines.
//! - `fleet_toml.rs`: a `fleet.toml` for the running hosts.
//! - `uplink.rs`: a rate limit on the deployer's side of the bridge ([`Testbed::limit_uplink`]).
//! - `reboot.rs`: simulated reboots ([`Testbed::reboot`]): processes end, `/run` empties, the
//!   default (or one-shot) boot entry boots, sshd comes back.
//! - `host.rs`: [`HostSpec`] (what to start), [`SimHost`] (what runs).
//! - `instance.rs`: instance numbers, listing, cleanup of dead instances.
//! - `prereq.rs`: [`ensure_prerequisites`]: packages, sudo user, namespace probe.
//! - `userland.rs`: [`Userland`]: Debian roots (other Nix/OpenSSH versions) for hosts and the
//!   deployer, built once and cached.
//! - `cmd.rs`: running helper processes.
//! - `main.rs`: the `fleet-testbed` binary (start/stop/list/cleanup).

mod access;
mod cache;
mod cmd;
mod error;
mod fleet_toml;
mod host;
pub mod instance;
mod prereq;
mod reboot;
mod reboot_requests;
mod setup;
mod sshd;
mod testbed;
mod uname;
mod uplink;
pub mod userland;

use std::path::PathBuf;

pub use access::nix_config;
pub use cache::{BinaryCache, CacheMode, CACHE_PORT};
pub use error::{Error, Result};
pub use fleet_toml::toml_str;
pub use host::{HostSpec, Login, SimHost};
pub use prereq::{
    ensure_prerequisites, missing_tools, SetupReport, PACKAGES, SUDO_PASSWORD, SUDO_USER,
};
pub use reboot::{Booting, Rebooted, BOOT_BREAKS_SSHD_MARKER, DEFAULT_SSHD_DELAY};
pub use reboot_requests::REQUEST_FILE as REBOOT_REQUEST_FILE;
pub use testbed::{StartTimings, Testbed, TestbedBuilder};
pub use userland::{Root, Userland};

/// The root of the fleet repository (the Cargo workspace).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join("../..");
    root.canonicalize().unwrap_or(root)
}

/// The nixpkgs stand-in (`tests/nixpkgs`), usable as a `path` pin.
pub fn nixpkgs_standin() -> PathBuf {
    repo_root().join("tests/nixpkgs")
}
