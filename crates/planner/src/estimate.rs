//! What fleet expects to send to a host, shown in the plan: the NAR bytes of the paths it lacks
//! (full), the compressed estimate on the compressed route, and the estimate with deltas when
//! the host holds paths of the same names.
//!
//! The estimates are rules of thumb, decided here from sizes and names only (no I/O):
//! - **compressed**: [`COMPRESSED_RATIO`] of the NAR bytes, what zstd makes of software
//!   (measured by `cargo xtask bench` on real shared libraries: 157.8 MB of NAR, 55.9 MB sent
//!   at level 3, 0.354; docs/performance.md). Level 1 on fast links sends about 15 % more,
//!   level 6 on slow ones about 8 % less.
//! - **delta**: a path whose exact name (`htop-3.3.0`) the host's current system holds under
//!   another hash is a rebuild whose bytes differ where store paths are embedded (a nixpkgs
//!   bump): its patch is estimated at [`PATCH_RATIO`] of its NAR plus [`PATCH_OVERHEAD`]
//!   (measured: 281 bytes for a 200 KB library, docs/deltas.md). Other paths count as
//!   compressed: a new version's patch is often not worth it, and fleet then sends it whole.
//!   The apply also needs the base in the deployer's store; one it lacks is sent whole.

use std::collections::BTreeSet;

use fleet_types::store_name::split_hash;
use serde::{Deserialize, Serialize};

use crate::decide::CopyRoute;
use crate::input::ClosurePath;

/// Compressed bytes per NAR byte on the compressed route.
pub const COMPRESSED_RATIO: f64 = 0.36;
/// Patch bytes per NAR byte of a path rebuilt under the same name.
pub const PATCH_RATIO: f64 = 0.01;
/// Per patched path: its export trailer and manifest line in the bundle.
pub const PATCH_OVERHEAD: u64 = 512;

/// What fleet expects to send to one host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    /// NAR bytes of the paths fleet sends (those the host fetches itself left out).
    pub full: u64,
    /// On the compressed route: the estimate of the compressed stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compressed: Option<u64>,
    /// When some paths have a base of the same name on the host (and the route is compressed,
    /// which deltas need): the estimate with those as patches and the rest compressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<u64>,
    /// How many paths the delta estimate counts as patches.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delta_paths: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The estimate for a host that is sent `sent` (the paths it lacks, less those it
/// substitutes) over `route`, holding `current_closure` (its current system's paths; empty when
/// unknown: no deltas).
pub fn expected(sent: &[&ClosurePath], route: CopyRoute, current_closure: &[String]) -> Expected {
    let full: u64 = sent.iter().map(|p| p.nar_size).sum();
    let compressed_of = |bytes: u64| (bytes as f64 * COMPRESSED_RATIO).round() as u64;
    if route != CopyRoute::Compressed {
        return Expected {
            full,
            ..Expected::default()
        };
    }
    let held: BTreeSet<&str> = current_closure.iter().map(|p| name_of(p)).collect();
    let (mut patched, mut patch_bytes, mut whole) = (0usize, 0u64, 0u64);
    for p in sent {
        if held.contains(name_of(&p.path)) {
            patched += 1;
            patch_bytes += (p.nar_size as f64 * PATCH_RATIO).round() as u64 + PATCH_OVERHEAD;
        } else {
            whole += p.nar_size;
        }
    }
    Expected {
        full,
        compressed: Some(compressed_of(full)),
        delta: (patched > 0).then(|| patch_bytes + compressed_of(whole)),
        delta_paths: patched,
    }
}

/// `htop-3.3.0` of `/nix/store/<hash>-htop-3.3.0`.
fn name_of(path: &str) -> &str {
    split_hash(path).1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(hash: char, name: &str, nar_size: u64) -> ClosurePath {
        ClosurePath {
            path: format!("/nix/store/{}-{name}", hash.to_string().repeat(32)),
            nar_size,
        }
    }

    #[test]
    fn full_compressed_and_delta() {
        let lib = cp('b', "libfoo-1.0", 1_000_000);
        let htop = cp('b', "htop-3.3.1", 200_000);
        let new = cp('b', "jq-1.7.1", 100_000);
        let sent = [&lib, &htop, &new];
        // The host runs the old build of libfoo-1.0 and an older htop.
        let current = vec![cp('a', "libfoo-1.0", 0).path, cp('a', "htop-3.3.0", 0).path];
        let e = expected(&sent, CopyRoute::Compressed, &current);
        assert_eq!(e.full, 1_300_000);
        assert_eq!(e.compressed, Some(468_000));
        // libfoo as a patch (1 % + 512), htop and jq compressed.
        assert_eq!(e.delta_paths, 1);
        assert_eq!(e.delta, Some(10_000 + 512 + 108_000));
        assert!(e.delta < e.compressed && e.compressed < Some(e.full));
    }

    #[test]
    fn no_delta_without_a_base_and_nothing_but_full_over_serve() {
        let lib = cp('b', "libfoo-1.0", 1_000);
        let e = expected(&[&lib], CopyRoute::Compressed, &[]);
        assert_eq!((e.full, e.compressed, e.delta), (1_000, Some(360), None));
        let current = vec![cp('a', "libfoo-1.0", 0).path];
        let e = expected(&[&lib], CopyRoute::Serve, &current);
        assert_eq!(
            e,
            Expected {
                full: 1_000,
                ..Expected::default()
            }
        );
        let e = expected(&[], CopyRoute::Nothing, &current);
        assert_eq!(e, Expected::default());
    }
}
