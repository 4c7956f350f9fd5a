//! fleet-types: the vocabulary every fleet crate speaks. Values checked when built, no I/O,
//! no processes, no tokio; it depends on no other fleet crate, and every fleet crate may use it.
//!
//! # Layout
//! - [`store_path`]: [`StorePath`] (a validated `/nix/store/<hash>-<name>`), nix32.
//! - [`store_name`]: names in store paths: `DrvName`'s name/version split, outputs, short forms.
//! - [`host`]: [`HostName`] (a DNS label, as fleet.toml's `[hosts.NAME]`).
//! - [`system`]: [`System`] (a Nix system double of Linux, `aarch64-linux`).
//! - [`flake`]: [`FlakeLock`], what a flake host was evaluated from.
//! - [`boot`]: [`BootSpec`] (what a toplevel boots) and [`BootPart`], and which parts of two
//!   systems differ ([`reboot_parts`]).

pub mod boot;
pub mod flake;
pub mod host;
pub mod store_name;
pub mod store_path;
pub mod system;

pub use boot::{reboot_parts, BootEntry, BootPart, BootSpec};
pub use flake::{FlakeLock, LockedInput};
pub use host::{host_name_problem, HostName, InvalidName};
pub use store_name::short_path;
pub use store_path::{InvalidStorePath, StorePath, StorePathError, STORE_DIR};
pub use system::{System, LINUX_SYSTEMS};
