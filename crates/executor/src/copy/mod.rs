//! The copy of an apply's missing paths to the hosts, each path read once however many hosts
//! lack it: over the hosts' store sessions (`serve`), or as zstd-compressed export streams into
//! `nix-store --import` (`compressed`, cut into `segments` lacked by the same hosts), or
//! through a relay on the hosts' LAN (`relay`, its shell in `relay_sh`, its key and cleanups
//! in `relay_state`; docs/relay.md). Which host takes which route is the apply's choice
//! (`apply/route.rs`); the compressed copy picks each host's zstd level from its measured link
//! (`adaptive`).

pub mod adaptive;
mod compressed;
pub mod delta;
pub mod delta_chunks;
pub mod relay;
mod relay_sh;
mod relay_state;
mod segments;
mod serve;

pub use adaptive::{LevelChoice, Transport};
pub use compressed::{
    copy_compressed, copy_compressed_each, drop_pending_roots, import_command, ImportTarget,
    PENDING_ROOTS,
};
pub use serve::{copy_closures, copy_closures_each, CopyTarget};

/// What one host received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyDone {
    pub paths: usize,
    pub nar_bytes: u64,
    /// Bytes on the wire (after compression), where known.
    pub wire_bytes: Option<u64>,
}

/// Told, as soon as one target's copy is complete and before the others are, its index in
/// `targets` and what it received: an apply goes on to activate that host at once, so a slow
/// host never holds back the others' activations.
pub type OnCopied<'a> = &'a (dyn Fn(usize, CopyDone) + Sync);

/// Per missing set: the NAR bytes and the number of its paths (what a host's progress counts
/// to).
fn totals<'a>(
    infos: &[fleet_store::PathInfo],
    missing: impl Iterator<Item = &'a std::collections::BTreeSet<fleet_store::StorePath>>,
) -> Vec<(u64, u64)> {
    missing
        .map(|m| {
            let bytes = infos
                .iter()
                .filter(|i| m.contains(&i.path))
                .map(|i| i.nar_size)
                .sum();
            (bytes, m.len() as u64)
        })
        .collect()
}
