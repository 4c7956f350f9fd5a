//! A flake's lock as fleet records it: what a flake host was evaluated from (fleet-nix-build),
//! recorded on the host at each apply, and compared by the next plan (fleet-planner).

use serde::{Deserialize, Serialize};

/// What a flake was locked to when it was evaluated: recorded on the host at each apply and
/// compared at the next plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlakeLock {
    /// The reference as fleet.toml gives it.
    pub reference: String,
    /// The git commit of the flake's tree (none for a `path:` flake or a dirty tree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The NAR hash of the flake's source as Nix copied it.
    pub nar_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<u64>,
    /// A git tree with uncommitted changes.
    #[serde(default)]
    pub dirty: bool,
    /// The flake's own inputs (the root's, by name), as `flake.lock` locks them.
    #[serde(default)]
    pub inputs: std::collections::BTreeMap<String, LockedInput>,
}

/// One input as locked in `flake.lock`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nar_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<u64>,
}
