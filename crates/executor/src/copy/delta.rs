//! The delta route: the paths a host lacks as zstd patches against paths of the same package
//! it has (see `fleet_store::delta`), in bundles the host unpacks, rebuilds, checks and
//! imports: one per chunk of its missing list, the next chunk's patches made while the host
//! imports the last ([`super::delta_chunks`], which runs an apply's delta phase; this module
//! makes the patches, a bundle and sends it). Then the host's store is asked again: whatever it still lacks (a patch that did not
//! rebuild the exact NAR, a base the host lost meanwhile) goes by the ordinary route, so a delta
//! can only save bytes, never fail a deploy.
//!
//! On the host (as root, POSIX sh, `zstd`, `tar`, `sha256sum`, all in NixOS's required
//! packages): unpack the bundle into a temporary folder; rebuild the NARs (the base's
//! dictionary, `fleet_store::delta::dictionary`, then `zstd -d --patch-from`) in the background, up to 4 manifest lines ahead of the
//! import (so only a few rebuilt NARs are on disk at once); for each manifest line, in order,
//! wait for its NAR, compare its SHA-256 with the NAR hash the deployer's store records, and
//! stream it with its export framing into one `nix-store --import`. The first path that does not check out ends the stream: what came
//! before it is imported (each path after its references), nothing after it.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fleet_store::delta::{self, Entry};
use fleet_store::{PathInfo, StorePath};

use crate::sudo::Privilege;
use crate::{quote, Connection, Stdin};

/// The host side (`sh -c SCRIPT`), the bundle on stdin, with the login's `PATH` (as the
/// compressed route's `zstd -dc | nix-store --import`). Exit 0 with `imported N` on stdout;
/// each path that did not check out is a `fleet-delta: …` line on stderr.
pub const HOST_SCRIPT: &str = r#"set -u
d=$(mktemp -d "${TMPDIR:-/tmp}/fleet-delta.XXXXXX") || exit 20
trap 'rm -rf "$d"' EXIT
zstd -q -dc | tar -x -C "$d" -f - || { echo "fleet-delta: cannot unpack the bundle" >&2; exit 21; }
# Every path is a GC root from before its import until the apply drops its pending roots.
roots=${1:-}
if [ -n "$roots" ]; then
  mkdir -p "$roots" || exit 23
  while read -r kind i path rest; do ln -sfn "$path" "$roots/${path##*/}"; done < "$d/manifest"
fi
# A patch's dictionary: the contents of the base's regular files, by path (fleet_store::delta::dictionary).
dictionary() {
  if [ -d "$1" ]; then
    (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r cat)
  else
    cat "$1"
  fi
}
# Rebuilds NAR $1 from its base $2 and its patch; why it could not, in $d/$1.why.
rebuild() {
  if ! dictionary "$2" > "$d/$1.base" 2> "$d/$1.err"; then
    echo "cannot read its base $2: $(cat "$d/$1.err")" > "$d/$1.why"; rm -f "$d/$1.base"; return 1
  fi
  if ! zstd -q -d --long=31 --patch-from="$d/$1.base" -o "$d/$1.nar" "$d/$1.patch" 2> "$d/$1.err"; then
    echo "the patch does not apply: $(cat "$d/$1.err")" > "$d/$1.why"; rm -f "$d/$1.base"; return 1
  fi
  rm -f "$d/$1.base" "$d/$1.patch"
}
# The rebuilds run in the background, up to $ahead manifest lines ahead of the import.
ahead=4
total=$(wc -l < "$d/manifest")
started=0
start_upto() {
  while [ "$started" -lt "$1" ] && [ "$started" -lt "$total" ]; do
    started=$((started + 1))
    read -r k j p b s <<LINE
$(sed -n "${started}p" "$d/manifest")
LINE
    if [ "$k" = delta ]; then
      rebuild "$j" "$b" > /dev/null &
      eval "pid_$j=\$!"
    fi
  done
}
: > "$d/imported"
{
  line=0
  while read -r kind i path base sha; do
    line=$((line + 1))
    start_upto $((line + ahead))
    if [ "$kind" = delta ]; then
      eval "pid=\$pid_$i"
      if ! wait "$pid"; then
        echo "fleet-delta: $path: $(cat "$d/$i.why" 2> /dev/null)" >&2; break
      fi
    fi
    if ! echo "$sha  $d/$i.nar" | sha256sum -c --status; then
      echo "fleet-delta: $path: the rebuilt NAR does not match its hash" >&2; break
    fi
    printf '\001\000\000\000\000\000\000\000'
    cat "$d/$i.nar" "$d/$i.trailer"
    rm -f "$d/$i.nar"
    echo "$path" >> "$d/imported"
  done < "$d/manifest"
  wait
  printf '\000\000\000\000\000\000\000\000'
} | nix-store --import > /dev/null || exit 22
echo "imported $(wc -l < "$d/imported")"
"#;

/// Patches made in this run, per (base, path): computed once, whichever hosts need them, also
/// when hosts ask for it at the same time (the others wait for the first). `None`: no patch
/// worth sending (too large, or zstd failed).
#[derive(Clone)]
pub struct PatchCache {
    made: Arc<Mutex<HashMap<PatchKey, Arc<tokio::sync::OnceCell<Patch>>>>>,
    /// At most one patch per core is being made, whichever hosts ask.
    jobs: Arc<tokio::sync::Semaphore>,
}

impl Default for PatchCache {
    fn default() -> Self {
        PatchCache {
            made: Arc::default(),
            jobs: Arc::new(tokio::sync::Semaphore::new(patch_jobs())),
        }
    }
}

/// Patches up to this size are always worth it: a small path's patch is about its compressed
/// NAR (its dictionary, the base's file contents, lacks the NAR's framing), and in the bundle
/// it keeps the paths that refer to it patchable.
pub const SMALL_PATCH: u64 = 1024;

/// Whether a patch of `patch` bytes for a NAR of `nar` bytes is worth sending: at most
/// [`delta::MAX_PATCH_RATIO`] of the NAR, or at most [`SMALL_PATCH`].
pub fn worth_it(patch: u64, nar: u64) -> bool {
    patch <= SMALL_PATCH || patch as f64 <= nar as f64 * delta::MAX_PATCH_RATIO
}

/// How many patches are made at once: the deployer's cores (2 to 8).
fn patch_jobs() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
}

/// A patch, or `None` when none is worth sending.
type Patch = Option<Arc<Vec<u8>>>;

/// (base, path).
type PatchKey = (StorePath, StorePath);

impl PatchCache {
    fn cell(&self, key: PatchKey) -> Arc<tokio::sync::OnceCell<Patch>> {
        self.made
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone()
    }

    /// Takes `patch` as the patch of `path` against `base`, as if made here (tests use it to
    /// send a corrupted patch); false when that patch was made or set already.
    pub fn set(&self, base: &StorePath, path: &StorePath, patch: Vec<u8>) -> bool {
        self.cell((base.clone(), path.clone()))
            .set(Some(Arc::new(patch)))
            .is_ok()
    }

    /// The patch of `path` against `base`, if made (or set) and worth sending.
    pub fn get(&self, base: &StorePath, path: &StorePath) -> Option<Arc<Vec<u8>>> {
        self.cell((base.clone(), path.clone()))
            .get()
            .cloned()
            .flatten()
    }

    /// The patch of `info` against `base`: made once (in its own folder under `tmp`), `None`
    /// when larger than [`delta::MAX_PATCH_RATIO`] of the NAR or when zstd failed.
    async fn patch(
        &self,
        base: &StorePath,
        info: &PathInfo,
        real_path: impl Fn(&StorePath) -> PathBuf,
        tmp: &Path,
    ) -> Patch {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let cell = self.cell((base.clone(), info.path.clone()));
        cell.get_or_init(|| async {
            let _permit = self.jobs.acquire().await.ok();
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = tmp.join(format!("patch-{n}"));
            let made = match std::fs::create_dir_all(&dir) {
                Ok(()) => delta::patch(real_path, base, &info.path, &dir).await.ok(),
                Err(_) => None,
            };
            let _ = std::fs::remove_dir_all(&dir);
            made.filter(|p| worth_it(p.len() as u64, info.nar_size))
                .map(Arc::new)
        })
        .await
        .clone()
    }
}

/// What a host's bundle holds.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub entries: Vec<Entry>,
    /// Paths sent as patches, and the patches' bytes.
    pub deltas: usize,
    pub patch_bytes: u64,
    /// NAR bytes those patches stand for.
    pub delta_nar_bytes: u64,
}

/// The bundle for a host lacking `missing` (dependency order) and holding `has`: a patch for
/// every path with a base the deployer also has (`local_has`) when the patch is at most
/// [`delta::MAX_PATCH_RATIO`] of the NAR and its references are on the host or patched before
/// it. Paths without a patch are left to the ordinary route (with its shared, compressed copy),
/// and so are the paths that refer to them. `None` when no path gets a patch.
pub async fn bundle(
    missing: &[PathInfo],
    has: &[StorePath],
    local_has: impl Fn(&StorePath) -> bool,
    real_path: impl Fn(&StorePath) -> PathBuf + Clone,
    cache: &PatchCache,
    tmp: &Path,
) -> Option<Bundle> {
    let lacking: BTreeSet<StorePath> = missing.iter().map(|i| i.path.clone()).collect();
    make_patches(missing, has, &local_has, real_path.clone(), cache, tmp).await;
    bundle_part(missing, &lacking, has, &local_has, real_path, cache, tmp).await
}

/// The bundle of `part`, a run of consecutive paths of a host's dependency-ordered missing
/// list, when the host still lacks `lacking` (which holds `part`'s paths, and the paths before
/// `part` that did not arrive): as [`bundle`], a path's references on the host already (not in
/// `lacking`) or patched before it in `part` ([`select`]). The patches not in `cache` yet are
/// made one by one: [`make_patches`] makes them a few at once beforehand.
pub async fn bundle_part(
    part: &[PathInfo],
    lacking: &BTreeSet<StorePath>,
    has: &[StorePath],
    local_has: &impl Fn(&StorePath) -> bool,
    real_path: impl Fn(&StorePath) -> PathBuf + Clone,
    cache: &PatchCache,
    tmp: &Path,
) -> Option<Bundle> {
    let paths: Vec<StorePath> = part.iter().map(|i| i.path.clone()).collect();
    let bases = delta::pair(&paths, has);
    let mut patches: Vec<Option<(StorePath, Arc<Vec<u8>>)>> = vec![None; part.len()];
    for (&i, base) in &bases {
        if local_has(base) {
            patches[i] = cache
                .patch(base, &part[i], real_path.clone(), tmp)
                .await
                .map(|p| (base.clone(), p));
        }
    }
    let mut out = Bundle {
        entries: Vec::new(),
        deltas: 0,
        patch_bytes: 0,
        delta_nar_bytes: 0,
    };
    for i in select(part, lacking, |i| patches[i].is_some()) {
        let (info, (base, p)) = (&part[i], patches[i].take()?);
        out.deltas += 1;
        out.patch_bytes += p.len() as u64;
        out.delta_nar_bytes += info.nar_size;
        out.entries.push(Entry::Delta {
            info: info.clone(),
            base,
            patch: p.to_vec(),
        });
    }
    (out.deltas > 0).then_some(out)
}

/// Which paths of `part` (dependency order) go as patches, by index: those with a patch
/// (`patched(i)`) whose references are all on the host (not in `lacking`) or go as patches
/// before them in `part`. A path without a patch goes by the ordinary route, and so do the
/// paths that need it.
pub fn select(
    part: &[PathInfo],
    lacking: &BTreeSet<StorePath>,
    patched: impl Fn(usize) -> bool,
) -> Vec<usize> {
    let mut sent: BTreeSet<&StorePath> = BTreeSet::new();
    let mut out = Vec::new();
    for (i, info) in part.iter().enumerate() {
        let refs_ready = info
            .references
            .iter()
            .all(|r| *r == info.path || !lacking.contains(r) || sent.contains(r));
        if refs_ready && patched(i) {
            sent.insert(&info.path);
            out.push(i);
        }
    }
    out
}

/// Makes the patches of every path of `missing` with a base in `has` the deployer has, a few
/// at once (each is two NAR dumps and a `zstd` process, mostly waiting for that process), into
/// `cache`; the bundle then takes them from there.
pub async fn make_patches(
    missing: &[PathInfo],
    has: &[StorePath],
    local_has: &impl Fn(&StorePath) -> bool,
    real_path: impl Fn(&StorePath) -> PathBuf + Clone,
    cache: &PatchCache,
    tmp: &Path,
) {
    use futures::StreamExt;
    let paths: Vec<StorePath> = missing.iter().map(|i| i.path.clone()).collect();
    let bases = delta::pair(&paths, has);
    let jobs = patch_jobs();
    let todo: Vec<(&StorePath, &PathInfo)> = bases
        .iter()
        .filter(|(_, base)| local_has(base))
        .map(|(&i, base)| (base, &missing[i]))
        .collect();
    futures::stream::iter(todo)
        .map(|(base, info)| {
            let real = real_path.clone();
            async move {
                cache.patch(base, info, real, tmp).await;
            }
        })
        .buffer_unordered(jobs)
        .collect::<Vec<()>>()
        .await;
}

/// What the host did with a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Bytes of the (compressed) bundle.
    pub bytes: u64,
    /// Paths the host imported.
    pub imported: usize,
    /// Why the host stopped early (a path that did not check out), if it did.
    pub stopped: Vec<String>,
}

/// Sends `bundle` to the host over `conn` and has it rebuilt and imported (as root), each path
/// rooted under `pending_roots` (a folder) from before its import when given. The bundle is
/// written to a temporary file first and streamed from it.
pub async fn send(
    conn: &Connection,
    privilege: &Privilege,
    bundle: &Bundle,
    real_path: impl Fn(&StorePath) -> PathBuf + Send + 'static,
    tmp: &Path,
    pending_roots: Option<&str>,
) -> Result<Sent, String> {
    // One file per bundle: hosts are sent to at once.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = tmp.join(format!("bundle-{}-{n}.tar.zst", std::process::id()));
    let entries = bundle.entries.clone();
    let path = file.clone();
    let bytes = tokio::task::spawn_blocking(move || {
        let f = std::fs::File::create(&path).map_err(|e| e.to_string())?;
        delta::write_bundle(std::io::BufWriter::new(f), &entries, real_path, 3)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())??;
    let reader = tokio::fs::File::open(&file)
        .await
        .map_err(|e| format!("reading the bundle {}: {e}", file.display()))?;
    let cmd = format!(
        "sh -c {} fleet-delta {}",
        quote(HOST_SCRIPT),
        quote(pending_roots.unwrap_or(""))
    );
    let out = conn
        .exec(&cmd, privilege, Stdin::Reader(Box::new(reader)))
        .await;
    let _ = std::fs::remove_file(&file);
    let out = out.map_err(|e| e.to_string())?;
    let stderr = out.stderr_lossy();
    let stopped: Vec<String> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("fleet-delta: "))
        .map(str::to_owned)
        .collect();
    if !out.success() {
        return Err(format!(
            "the delta import failed: {}",
            stopped
                .first()
                .cloned()
                .unwrap_or_else(|| stderr.trim().to_owned())
        ));
    }
    let imported = out
        .stdout_lossy()
        .trim()
        .strip_prefix("imported ")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    Ok(Sent {
        bytes,
        imported,
        stopped,
    })
}

/// The paths of `missing` the host has not got yet after a delta (the rest of the copy).
pub fn still_missing(
    missing: &BTreeSet<StorePath>,
    valid_now: &BTreeSet<StorePath>,
) -> BTreeSet<StorePath> {
    missing.difference(valid_now).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_patches_and_quarter_patches_are_worth_it() {
        assert!(worth_it(90, 120));
        assert!(worth_it(SMALL_PATCH, 100));
        assert!(worth_it(25_000, 100_000));
        assert!(!worth_it(25_001, 100_000));
        assert!(!worth_it(SMALL_PATCH + 1, 2_000));
    }

    #[test]
    fn the_host_script_is_posix_sh() {
        crate::quote::assert_posix_sh(super::HOST_SCRIPT);
    }

    fn sp(hash: char, name: &str) -> StorePath {
        StorePath::new(format!("/nix/store/{}-{name}", hash.to_string().repeat(32))).unwrap()
    }

    /// Hosts ask for the same patches at once, and different patches share a base: each patch
    /// is made once, and each rebuilds its own new NAR (they once shared temporary files, and a
    /// host got a patch made from another path's NAR).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn patches_asked_for_at_once_are_made_once_and_each_is_right() {
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i * 7919).to_le_bytes())
            .collect();
        let write = |name: &str, fill: u8| {
            let mut b = body.clone();
            b[1000..1032].copy_from_slice(&[fill; 32]);
            let f = dir.path().join(name);
            std::fs::write(&f, &b).unwrap();
            f
        };
        let base = sp('a', "lib");
        let mut files = HashMap::from([(base.clone(), write("base", b'a'))]);
        let news: Vec<PathInfo> = (0..6u8)
            .map(|k| {
                // nix32 has no e, o, t, u.
                let path = sp(['b', 'c', 'd', 'f', 'g', 'h'][k as usize], "lib");
                files.insert(path.clone(), write(&format!("new{k}"), b'b' + k));
                PathInfo {
                    path,
                    deriver: None,
                    nar_hash: String::new(),
                    nar_size: 400_000,
                    references: BTreeSet::new(),
                    sigs: Vec::new(),
                    ca: None,
                }
            })
            .collect();
        let files = Arc::new(files);
        let real = {
            let files = files.clone();
            move |p: &StorePath| files[p].clone()
        };
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let cache = PatchCache::default();
        // Three "hosts", all six patches each, at once.
        let hosts = (0..3).map(|_| {
            futures::future::join_all(
                news.iter()
                    .map(|info| cache.patch(&base, info, real.clone(), &tmp)),
            )
        });
        let got = futures::future::join_all(hosts).await;
        let base_nar = dir.path().join("base.dict");
        fleet_store::delta::dictionary(&files[&base], std::fs::File::create(&base_nar).unwrap())
            .unwrap();
        for (k, info) in news.iter().enumerate() {
            let p = got[0][k].clone().expect("a patch");
            for other in &got[1..] {
                assert!(Arc::ptr_eq(&p, other[k].as_ref().unwrap()), "made once");
            }
            let pf = dir.path().join(format!("p{k}"));
            std::fs::write(&pf, &*p).unwrap();
            let out = std::process::Command::new("zstd")
                .args(["-q", "-d", "-c", "--long=31"])
                .arg(format!("--patch-from={}", base_nar.display()))
                .arg(&pf)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let mut want = Vec::new();
            fleet_store::nar::dump(&files[&info.path], &mut want).unwrap();
            assert!(out.stdout == want, "patch {k} rebuilds its own NAR");
        }
        assert!(
            tmp.read_dir().unwrap().next().is_none(),
            "temporary folders removed"
        );
    }
}
