//! What fleet records on the host at each apply, and the deployment's id.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::Goal;

/// What fleet records on the host at each apply (`/nix/var/fleet/records/<toplevel>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// fleet.toml's git commit, if it is in a git repository.
    pub commit: Option<String>,
    /// Whether the work tree had uncommitted changes.
    pub dirty: Option<bool>,
    /// `user@machine` that ran the apply.
    pub by: String,
    /// RFC 3339 UTC.
    pub at: String,
    pub toplevel: String,
    pub package: String,
    pub goal: Goal,
    pub fleet_version: String,
    pub id: String,
    /// A flake host: the lock it was evaluated with (reference, revision, whether the tree was
    /// dirty, its inputs), compared with the next plan's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flake: Option<serde_json::Value>,
}

/// A fresh, unique deployment id (time + pid + counter).
pub fn deployment_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}-{}-{}",
        t.as_secs(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique() {
        assert_ne!(deployment_id(), deployment_id());
    }
}
