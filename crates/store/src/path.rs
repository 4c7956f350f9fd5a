//! Path info; store paths and nix32 are fleet-types' (re-exported here).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

pub use fleet_types::store_path::{
    nix32_decode, nix32_encode, InvalidStorePath, StorePath, StorePathError, STORE_DIR,
};

/// What a store knows about one valid path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathInfo {
    pub path: StorePath,
    pub deriver: Option<StorePath>,
    /// `sha256:<nix32>`.
    pub nar_hash: String,
    pub nar_size: u64,
    pub references: BTreeSet<StorePath>,
    pub sigs: Vec<String>,
    pub ca: Option<String>,
}
