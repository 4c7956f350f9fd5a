//! The delta route's pipeline (docs/deltas.md): a host's dependency-ordered missing list is cut
//! into a few consecutive chunks ([`cut`]), each sent as one bundle ([`super::delta::send`],
//! the host script and bundle format unchanged), and while the host rebuilds and imports chunk
//! k the deployer already makes chunk k+1's patches. Making patches, the link and the host's
//! rebuilds so overlap instead of adding up.
//!
//! A path goes in its chunk's bundle when it has a patch and each of its references is on the
//! host already (imported with an earlier chunk, or there before) or goes before it in the same
//! bundle ([`super::delta::select`] against what the host still lacks). A chunk the host did
//! not import whole (a patch that did not check out, a failed session) ends the host's delta
//! phase: later chunks are not sent, and whatever is still missing goes by the ordinary route.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use fleet_store::{PathInfo, StorePath};

use super::delta::{bundle_part, make_patches, send, PatchCache};
use crate::sudo::Privilege;
use crate::Connection;

/// How a host's missing list is cut: into up to `chunks` runs of about the same number of
/// paths, each of at least `min_paths` paths (so fewer chunks for a short list: one for a list
/// under twice `min_paths`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunking {
    pub chunks: usize,
    pub min_paths: usize,
}

impl Default for Chunking {
    /// 4 chunks of at least 8 paths (measured by `cargo xtask bench --only-bump`, docs/deltas.md).
    fn default() -> Self {
        Chunking {
            chunks: 4,
            min_paths: 8,
        }
    }
}

/// The chunks of `missing` (index ranges, consecutive, covering it in order, none empty): as
/// many as `chunking` says but at most one per `min_paths` paths, the first ones one path
/// longer when the paths do not divide evenly. By paths, not bytes: a path's cost on both sides
/// is mostly its processes (two NAR dumps and a `zstd` here; `find`, `zstd`, `sha256sum` on
/// the host), whatever its size.
pub fn cut(missing: &[PathInfo], chunking: Chunking) -> Vec<Range<usize>> {
    let len = missing.len();
    if len == 0 {
        return Vec::new();
    }
    let n = chunking
        .chunks
        .min(len / chunking.min_paths.max(1))
        .clamp(1, len);
    let (each, longer) = (len / n, len % n);
    let mut start = 0;
    (0..n)
        .map(|k| {
            let end = start + each + usize::from(k < longer);
            let r = start..end;
            start = end;
            r
        })
        .collect()
}

/// Whether the host goes on with the next chunk after one whose bundle held `sent` (in order)
/// and of which it imported the first `imported`: what it imported is no longer in `lacking`;
/// anything short of the whole bundle (or a stop reported) ends the host's delta phase.
pub fn next_chunk(
    lacking: &mut BTreeSet<StorePath>,
    sent: &[StorePath],
    imported: usize,
    stopped: bool,
) -> bool {
    for p in sent.iter().take(imported) {
        lacking.remove(p);
    }
    imported >= sent.len() && !stopped
}

/// What a host's delta phase did, summed over its chunks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chunked {
    /// Paths sent as patches, their patches' bytes and the NAR bytes they stand for.
    pub deltas: usize,
    pub patch_bytes: u64,
    pub delta_nar_bytes: u64,
    /// Bytes of the (compressed) bundles.
    pub bytes: u64,
    /// Bundles sent (chunks with no patch send nothing).
    pub bundles: usize,
    /// Paths the host imported, in order.
    pub imported: Vec<StorePath>,
    /// Why the host stopped in a chunk (a path that did not check out), if it did.
    pub stopped: Option<String>,
    /// Why a chunk's session failed, if one did.
    pub failed: Option<String>,
}

/// One host's delta phase, chunk after chunk (see the module doc): `missing` in dependency
/// order, `has` what it holds, each path rooted under `pending_roots` when given.
#[allow(clippy::too_many_arguments)]
pub async fn send_chunked(
    conn: &Connection,
    privilege: &Privilege,
    missing: &[PathInfo],
    has: &[StorePath],
    local_has: impl Fn(&StorePath) -> bool,
    real_path: impl Fn(&StorePath) -> PathBuf + Clone + Send + 'static,
    cache: &PatchCache,
    tmp: &Path,
    pending_roots: Option<&str>,
    chunking: Chunking,
) -> Chunked {
    let chunks = cut(missing, chunking);
    let mut lacking: BTreeSet<StorePath> = missing.iter().map(|i| i.path.clone()).collect();
    let mut out = Chunked::default();
    if let Some(first) = chunks.first() {
        make_patches(
            &missing[first.clone()],
            has,
            &local_has,
            real_path.clone(),
            cache,
            tmp,
        )
        .await;
    }
    for (k, range) in chunks.iter().enumerate() {
        let part = &missing[range.clone()];
        let bundle = bundle_part(
            part,
            &lacking,
            has,
            &local_has,
            real_path.clone(),
            cache,
            tmp,
        )
        .await;
        // The next chunk's patches are made while this one travels and is imported.
        let ahead = async {
            if let Some(next) = chunks.get(k + 1) {
                let next = &missing[next.clone()];
                make_patches(next, has, &local_has, real_path.clone(), cache, tmp).await;
            }
        };
        let Some(b) = bundle else {
            ahead.await;
            continue;
        };
        let sending = send(conn, privilege, &b, real_path.clone(), tmp, pending_roots);
        let (sent, ()) = tokio::join!(sending, ahead);
        out.bundles += 1;
        let sent = match sent {
            Ok(sent) => sent,
            Err(e) => {
                out.failed = Some(e);
                break;
            }
        };
        let paths: Vec<StorePath> = b.entries.iter().map(|e| e.info().path.clone()).collect();
        out.deltas += b.deltas;
        out.patch_bytes += b.patch_bytes;
        out.delta_nar_bytes += b.delta_nar_bytes;
        out.bytes += sent.bytes;
        out.imported
            .extend(paths.iter().take(sent.imported).cloned());
        let stopped = !sent.stopped.is_empty();
        if !next_chunk(&mut lacking, &paths, sent.imported, stopped) {
            out.stopped = Some(sent.stopped.first().cloned().unwrap_or_else(|| {
                format!(
                    "{} of the {} paths of chunk {} imported",
                    sent.imported,
                    paths.len(),
                    k + 1
                )
            }));
            break;
        }
    }
    out
}

/// One host of an apply, as the delta phase sees it.
pub(crate) struct DeltaHost<'a> {
    pub conn: &'a Connection,
    pub privilege: &'a Privilege,
    /// What it lacks; the paths it imported are taken out.
    pub missing: &'a mut BTreeSet<StorePath>,
    /// What it holds (its current system's closure).
    pub has: &'a [StorePath],
    /// Its pending GC roots folder.
    pub pending_roots: String,
    pub events: &'a crate::fanout::HostEvents,
}

/// The delta phase of an apply: every host that holds paths of the same packages gets the
/// paths it lacks as patches where they are worth it, chunk after chunk ([`send_chunked`];
/// hosts at once, at most `parallel`; each patch made once), and what it imported is no longer
/// missing. A host where nothing is worth a patch, or whose delta import fails, keeps the rest
/// of its missing set for the ordinary copy.
pub(crate) async fn delta_first(
    hosts: Vec<DeltaHost<'_>>,
    infos: &[PathInfo],
    store: &fleet_store::local::LocalStore,
    parallel: usize,
) {
    use futures::StreamExt;
    let tmp = std::env::temp_dir().join(format!("fleet-delta-{}", std::process::id()));
    if std::fs::create_dir_all(&tmp).is_err() {
        return;
    }
    let cache = PatchCache::default();
    futures::stream::iter(hosts.into_iter().map(|h| {
        let (cache, tmp, store) = (cache.clone(), tmp.clone(), store.clone());
        async move {
            if h.has.is_empty() || h.missing.is_empty() {
                return;
            }
            let missing: Vec<PathInfo> = infos
                .iter()
                .filter(|i| h.missing.contains(&i.path))
                .cloned()
                .collect();
            let real = {
                let store = store.clone();
                move |p: &StorePath| store.real_path(p)
            };
            let local = |p: &StorePath| store.real_path(p).exists();
            let done = send_chunked(
                h.conn,
                h.privilege,
                &missing,
                h.has,
                local,
                real,
                &cache,
                &tmp,
                Some(&h.pending_roots),
                Chunking::default(),
            )
            .await;
            for p in &done.imported {
                h.missing.remove(p);
            }
            if let Some(line) = log_line(&done, missing.len()) {
                let _ = h.events.log(crate::fanout::LogStream::Fleet, line).await;
            }
        }
    }))
    .buffered(parallel.max(1))
    .collect::<Vec<()>>()
    .await;
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The host's `fleet` log line of its delta phase, if it sent anything: e.g. `22 of 24 paths
/// as patches (1810 bytes for 4247560 bytes of NAR); 7455 bytes sent in 3 bundles`.
fn log_line(done: &Chunked, missing: usize) -> Option<String> {
    if done.deltas == 0 {
        return done
            .failed
            .as_ref()
            .map(|e| format!("deltas failed ({e}); copying whole"));
    }
    let mut line = format!(
        "{} of {missing} paths as patches ({} bytes for {} bytes of NAR); {} bytes sent in {} bundle{}",
        done.deltas,
        done.patch_bytes,
        done.delta_nar_bytes,
        done.bytes,
        done.bundles,
        if done.bundles == 1 { "" } else { "s" }
    );
    if let Some(why) = &done.stopped {
        line.push_str(&format!("; stopped at {why}"));
    }
    if let Some(e) = &done.failed {
        line.push_str(&format!(
            "; then deltas failed ({e}); copying the rest whole"
        ));
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::super::delta::select;
    use super::*;

    fn sp(n: usize) -> StorePath {
        // nix32 digits only.
        StorePath::new(format!("/nix/store/{:0>32}-p{n}", n)).unwrap()
    }

    fn info(n: usize, nar_size: u64, refs: &[usize]) -> PathInfo {
        PathInfo {
            path: sp(n),
            deriver: None,
            nar_hash: String::new(),
            nar_size,
            references: refs.iter().map(|&r| sp(r)).collect(),
            sigs: Vec::new(),
            ca: None,
        }
    }

    fn covers(chunks: &[Range<usize>], len: usize) {
        let mut at = 0;
        for c in chunks {
            assert_eq!(c.start, at, "{chunks:?}: consecutive");
            assert!(c.end > c.start, "{chunks:?}: none empty");
            at = c.end;
        }
        assert_eq!(at, len, "{chunks:?}: covers the list");
    }

    #[test]
    fn chunks_split_the_paths_evenly_and_a_short_list_stays_whole() {
        let even: Vec<PathInfo> = (0..40).map(|n| info(n, 1000, &[])).collect();
        let c = cut(&even, Chunking::default());
        assert_eq!(c, vec![0..10, 10..20, 20..30, 30..40]);
        assert_eq!(cut(&even[..15], Chunking::default()), vec![0..15]);
        assert_eq!(cut(&even[..20], Chunking::default()), vec![0..10, 10..20]);
        assert!(cut(&[], Chunking::default()).is_empty());
        let c = cut(&even[..35], Chunking::default());
        assert_eq!(c, vec![0..9, 9..18, 18..27, 27..35]);
        covers(&c, 35);
        assert_eq!(
            cut(
                &even,
                Chunking {
                    chunks: 3,
                    min_paths: 8
                }
            ),
            vec![0..14, 14..27, 27..40]
        );
        // One path per chunk.
        let one = Chunking {
            chunks: 100,
            min_paths: 1,
        };
        assert_eq!(cut(&even[..3], one), vec![0..1, 1..2, 2..3]);
    }

    /// Chunk 0 holds a (patched) and x (no patch); chunk 1 holds b -> a, c -> b, d -> x and
    /// e -> y, y on the host before the apply. b goes (a arrived with chunk 0), c goes (b goes
    /// before it), d does not (x never arrived), e goes.
    #[test]
    fn references_count_when_imported_with_an_earlier_chunk_or_earlier_in_the_same() {
        let y = 9;
        let list = [
            info(1, 10, &[]),
            info(2, 10, &[]),
            info(3, 10, &[1]),
            info(4, 10, &[3, 4]),
            info(5, 10, &[2]),
            info(6, 10, &[y]),
        ];
        let (x_idx, d_idx) = (1, 4);
        let chunks = [0..2, 2..6];
        let mut lacking: BTreeSet<StorePath> = list.iter().map(|i| i.path.clone()).collect();
        let patched = |global: usize| global != x_idx;
        // Chunk 0.
        let part = &list[chunks[0].clone()];
        let go = select(part, &lacking, |i| patched(chunks[0].start + i));
        assert_eq!(go, vec![0]);
        let sent: Vec<StorePath> = go.iter().map(|&i| part[i].path.clone()).collect();
        assert!(next_chunk(&mut lacking, &sent, sent.len(), false));
        assert!(!lacking.contains(&sp(1)) && lacking.contains(&sp(2)));
        // Chunk 1.
        let part = &list[chunks[1].clone()];
        let go: Vec<usize> = select(part, &lacking, |i| patched(chunks[1].start + i))
            .into_iter()
            .map(|i| i + chunks[1].start)
            .collect();
        assert_eq!(go, vec![2, 3, 5], "d ({d_idx}) needs x, which did not go");
        // Had chunk 0 not imported a, b and c would wait for the ordinary route too.
        let mut lacking: BTreeSet<StorePath> = list.iter().map(|i| i.path.clone()).collect();
        let go = select(part, &lacking, |_| true);
        assert_eq!(go, vec![3], "only e, whose reference was on the host");
        lacking.remove(&sp(1));
        assert_eq!(select(part, &lacking, |_| true), vec![0, 1, 3]);
    }

    #[test]
    fn a_chunk_imported_short_or_stopped_ends_the_hosts_delta_phase() {
        let sent = vec![sp(1), sp(2), sp(3)];
        let mut lacking: BTreeSet<StorePath> = (1..=5).map(sp).collect();
        assert!(!next_chunk(&mut lacking, &sent, 1, true));
        assert_eq!(lacking, (2..=5).map(sp).collect());
        let mut lacking: BTreeSet<StorePath> = (1..=5).map(sp).collect();
        assert!(
            !next_chunk(&mut lacking, &sent, 2, false),
            "short, no reason"
        );
        let mut lacking: BTreeSet<StorePath> = (1..=5).map(sp).collect();
        assert!(
            !next_chunk(&mut lacking, &sent, 3, true),
            "all in, yet a stop"
        );
        let mut lacking: BTreeSet<StorePath> = (1..=5).map(sp).collect();
        assert!(next_chunk(&mut lacking, &sent, 3, false));
        assert_eq!(lacking, [sp(4), sp(5)].into());
    }

    #[test]
    fn the_log_line_sums_the_chunks_as_before() {
        let done = Chunked {
            deltas: 22,
            patch_bytes: 1810,
            delta_nar_bytes: 4_247_560,
            bytes: 7455,
            bundles: 3,
            imported: Vec::new(),
            stopped: Some("p: the rebuilt NAR does not match its hash".into()),
            failed: None,
        };
        assert_eq!(
            log_line(&done, 24).unwrap(),
            "22 of 24 paths as patches (1810 bytes for 4247560 bytes of NAR); 7455 bytes sent \
             in 3 bundles; stopped at p: the rebuilt NAR does not match its hash"
        );
        let failed = Chunked {
            failed: Some("the delta import failed: x".into()),
            ..Chunked::default()
        };
        assert_eq!(
            log_line(&failed, 3).unwrap(),
            "deltas failed (the delta import failed: x); copying whole"
        );
        assert_eq!(log_line(&Chunked::default(), 3), None);
    }
}
