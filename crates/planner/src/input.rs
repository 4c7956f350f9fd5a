//! What the planner is given: per host the desired system (or why it could not be evaluated or
//! built) and the facts read from the host (or why it could not be reached).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// One store path of a closure with the size of its NAR serialisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosurePath {
    /// Full store path, e.g. `/nix/store/<hash>-htop-3.3.0`.
    pub path: String,
    /// Size of the path's NAR in bytes (what `nix path-info --json` calls `narSize`).
    pub nar_size: u64,
}

/// What a system boots: where its `kernel`, `initrd`, `kernel-modules`, `dtbs` and `firmware`
/// links point, and the contents of its `kernel-params` and `init-interface-version` files.
/// NixOS needs a reboot for a change of any of them to take effect.
///
/// `None` means the system has no such entry (a container; `dtbs` on x86) or it could not be
/// read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSpec {
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub modules: Option<String>,
    #[serde(default)]
    pub kernel_params: Option<String>,
    #[serde(default)]
    pub dtbs: Option<String>,
    #[serde(default)]
    pub firmware: Option<String>,
    #[serde(default)]
    pub init_interface: Option<String>,
}

/// A specialisation of a built system (`TOPLEVEL/specialisation/NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Specialisation {
    pub name: String,
    /// Its own toplevel (where the link resolves).
    pub toplevel: String,
}

/// The system fleet wants on a host, evaluated and built locally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredHost {
    /// Host name as written in the inventory.
    pub name: String,
    /// Nix system double of the host, e.g. `aarch64-linux`.
    pub system: String,
    /// Store path of the NixOS system toplevel.
    pub toplevel: String,
    /// Store path of the deployment package (configuration, pinned nixpkgs, toplevel, `switch`).
    pub package: String,
    /// The whole closure of the deployment package, toplevel included, topologically sorted
    /// (references before referrers).
    pub closure: Vec<ClosurePath>,
    /// Boot-relevant paths of the desired toplevel.
    pub boot: BootSpec,
    /// Its specialisations.
    #[serde(default)]
    pub specialisations: Vec<Specialisation>,
    /// Store path of the pinned nixpkgs the package links (part of `closure`), when known.
    #[serde(default)]
    pub nixpkgs: Option<String>,
    /// A flake host's lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flake: Option<crate::FlakeLock>,
}

/// What the host told us about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteState {
    /// Target of `/run/current-system`; `None` when the host runs no NixOS system yet.
    pub current: Option<String>,
    /// Target of `/run/booted-system`.
    pub booted: Option<String>,
    /// Number of the generation `/nix/var/nix/profiles/system` points to.
    pub generation: Option<u64>,
    /// What the system profile points to: the system the next boot runs.
    pub profile: Option<String>,
    /// The system the bootloader's default entry boots, where fleet can read it (systemd-boot,
    /// extlinux); `None` when unknown.
    pub boot_default: Option<String>,
    /// The specialisation of the profile's system that the host runs, if any.
    pub specialisation: Option<String>,
    /// Store paths of the current system's closure; empty when unknown.
    pub current_closure: Vec<String>,
    /// Boot-relevant paths of the current system.
    pub current_boot: BootSpec,
    /// Boot-relevant paths of the booted system (`/run/booted-system`).
    pub booted_boot: BootSpec,
    /// Which paths of the desired closure the host already has.
    pub present: BTreeSet<String>,
    /// The Nix system the host runs (`aarch64-linux`), when known.
    #[serde(default)]
    pub system: Option<String>,
    /// The host has `zstd` (the compressed copy can reach it).
    #[serde(default)]
    pub zstd: bool,
    /// Its `MemAvailable` in bytes, when known.
    #[serde(default)]
    pub mem_available: Option<u64>,
    /// For a host with `substitute = true`: which of its missing paths its own substituters
    /// offer (asked at plan time); `None`: not asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substitutable: Option<BTreeSet<String>>,
    /// The flake lock fleet recorded when it deployed what runs (a flake host's last deploy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flake: Option<crate::FlakeLock>,
}

/// Facts about a host, or why they could not be read, as a sentence that says which stage
/// failed (`unreachable: …`, `reading the host's store failed: …`); the plan shows it as is.
pub type HostFacts = Result<RemoteState, String>;

/// Everything the planner needs to know about one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInput {
    /// Host name as written in the inventory.
    pub name: String,
    /// The desired system, or why it could not be evaluated or built.
    pub desired: Result<DesiredHost, String>,
    /// The host's facts, or why they could not be read (see [`HostFacts`]).
    pub facts: HostFacts,
}
