//! The delta route against a simulated host: paths rebuilt with new hashes whose bytes differ
//! only where a store path is embedded travel as patches the host rebuilds from its own old
//! paths; a corrupted patch or a patch against the wrong base never becomes a valid path, and
//! what did not arrive goes by the ordinary copy. Needs root and namespaces; never skipped.

mod simulated;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use fleet_executor::copy::delta::{self, PatchCache};
use fleet_executor::deploy::{self, CopyTarget};
use fleet_executor::store::StoreSession;
use fleet_executor::*;
use fleet_store::delta::Entry;
use fleet_store::local::{closure_infos, LocalStore};
use fleet_store::{PathInfo, StorePath};
use fleet_testbed::{HostSpec, Testbed};
use simulated::{connector, target};

/// `lib-1.0` of generation `seed`: 1.3 MB of text and the path of its `dep-1.0` (which holds
/// the seed), so two generations differ only where that path is embedded.
fn build(tb: &Testbed, seed: &str) -> StorePath {
    let expr = format!(
        r#"let
  common = {{ system = "x86_64-linux"; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; }};
  dep = derivation (common // {{ name = "dep-1.0"; args = [ "-c" "echo {seed} > $out" ]; }});
in derivation (common // {{
  name = "lib-1.0"; inherit dep;
  args = [ "-c" "mkdir $out && seq 1 200000 > $out/blob && echo $dep >> $out/blob && seq 200001 210000 >> $out/blob" ];
}})"#
    );
    let out = Command::new("nix-build")
        .args(["--no-out-link", "-E", &expr])
        .envs(tb.nix_env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    StorePath::new(String::from_utf8_lossy(&out.stdout).trim()).unwrap()
}

/// The tests here run one at a time: the simulated hosts share this machine's /tmp, where
/// each checks that its delta left nothing.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn real_path(p: &StorePath) -> PathBuf {
    PathBuf::from(p.as_str())
}

/// The bundle for a host lacking `missing` and holding `has`, from this machine's store.
async fn bundle(
    missing: &[PathInfo],
    has: &[StorePath],
    cache: &PatchCache,
    tmp: &std::path::Path,
) -> Option<delta::Bundle> {
    delta::bundle(
        missing,
        has,
        |p| real_path(p).exists(),
        real_path,
        cache,
        tmp,
    )
    .await
}

async fn closure(p: &StorePath) -> Vec<PathInfo> {
    closure_infos(&LocalStore::system(), std::slice::from_ref(p))
        .await
        .unwrap()
}

/// The paths of `infos` the host lacks, in order.
async fn lacking(conn: &Connection, infos: &[PathInfo]) -> Vec<PathInfo> {
    let all: Vec<StorePath> = infos.iter().map(|i| i.path.clone()).collect();
    let mut s = StoreSession::open(conn, &Privilege::None).await.unwrap();
    let valid = s.valid_paths(&all, false).await.unwrap();
    s.close().await.unwrap();
    infos
        .iter()
        .filter(|i| !valid.contains(&i.path))
        .cloned()
        .collect()
}

/// The ordinary copy (serve protocol) of `missing`.
async fn copy(conn: &Connection, infos: &[PathInfo], missing: BTreeSet<StorePath>) {
    let mut session = StoreSession::open(conn, &Privilege::None).await.unwrap();
    let events = HostEvents::new(
        "h1",
        Instant::now(),
        EventSink::discard(),
        CancellationToken::new(),
    );
    let r = deploy::copy_closures(
        &LocalStore::system(),
        infos,
        vec![CopyTarget {
            session: &mut session,
            missing,
            events,
        }],
    )
    .await;
    r.into_iter().next().unwrap().expect("copy");
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_rebuild_on_the_host_and_bad_ones_never_become_valid() {
    let _one = ONE_AT_A_TIME.lock().await;
    let tb = Testbed::start([HostSpec::new("h1")]).unwrap();
    let conn = connector(&tb).connect(&target(&tb, "h1")).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cache = PatchCache::default();

    // The host runs generation 1.
    let old = build(&tb, "1");
    let old_infos = closure(&old).await;
    let missing = lacking(&conn, &old_infos).await;
    copy(
        &conn,
        &old_infos,
        missing.iter().map(|i| i.path.clone()).collect(),
    )
    .await;
    let has: Vec<StorePath> = old_infos.iter().map(|i| i.path.clone()).collect();

    // Generation 2: every hash is new; `lib` differs only where `dep`'s path is embedded.
    let new = build(&tb, "2");
    let new_infos = closure(&new).await;
    let missing = lacking(&conn, &new_infos).await;
    assert_eq!(missing.len(), 2, "dep and lib");
    let b = bundle(&missing, &has, &cache, tmp.path())
        .await
        .expect("lib gets a patch");
    let lib_patch = b
        .entries
        .iter()
        .find_map(|e| match e {
            Entry::Delta { info, patch, .. } if info.path == new => Some(patch.len() as u64),
            _ => None,
        })
        .expect("lib travels as a patch");
    let lib_nar = missing.iter().find(|i| i.path == new).unwrap().nar_size;
    assert!(
        lib_patch * 100 < lib_nar,
        "{lib_patch} bytes of patch for {lib_nar} of NAR"
    );
    let sent = delta::send(&conn, &Privilege::None, &b, real_path, tmp.path(), None)
        .await
        .unwrap();
    assert_eq!(sent.imported, 2, "{sent:?}");
    assert!(sent.stopped.is_empty(), "{sent:?}");
    assert!(lacking(&conn, &new_infos).await.is_empty());
    let on_host = tb.exec_ok("h1", &format!("sha256sum {new}/blob")).unwrap();
    let here = String::from_utf8(
        Command::new("sha256sum")
            .arg(format!("{new}/blob"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(on_host.trim(), here.trim());

    // Generation 3, twice spoilt: a patch with flipped bytes, and a patch made against another
    // base than the one named. Neither path becomes valid; the stream stops at the first.
    let newer = build(&tb, "3");
    let newer_infos = closure(&newer).await;
    let missing = lacking(&conn, &newer_infos).await;
    let has: Vec<StorePath> = new_infos.iter().map(|i| i.path.clone()).collect();
    let good = bundle(&missing, &has, &cache, tmp.path()).await.unwrap();
    let spoil = |f: &dyn Fn(&mut Entry)| {
        let mut b = good.clone();
        b.entries.iter_mut().for_each(f);
        b
    };
    let flipped = spoil(&|e| {
        if let Entry::Delta { patch, .. } = e {
            let mid = patch.len() / 2;
            patch[mid] ^= 0xff;
            patch[mid + 1] ^= 0xff;
        }
    });
    let dep_of = |infos: &[PathInfo]| {
        infos
            .iter()
            .find(|i| i.path.name() == "dep-1.0")
            .unwrap()
            .path
            .clone()
    };
    let wrong_base = spoil(&|e| {
        if let Entry::Delta { base, .. } = e {
            *base = dep_of(&new_infos);
        }
    });
    for (what, b) in [("flipped bytes", &flipped), ("wrong base", &wrong_base)] {
        let sent = delta::send(&conn, &Privilege::None, b, real_path, tmp.path(), None)
            .await
            .unwrap();
        assert_eq!(sent.stopped.len(), 1, "{what}: {sent:?}");
        let still = lacking(&conn, &newer_infos).await;
        assert!(
            still.iter().any(|i| i.path == newer),
            "{what}: the spoilt path is not valid"
        );
        // No partial or wrong path in the store, and nothing left in /tmp.
        assert_eq!(
            tb.exec_ok("h1", &format!("test -e {newer} && echo yes || echo no"))
                .unwrap()
                .trim(),
            "no",
            "{what}"
        );
        assert_eq!(
            tb.exec_ok("h1", "ls /tmp | grep -c fleet-delta || true")
                .unwrap()
                .trim(),
            "0"
        );
    }
    // The fallback: what is still missing goes by the ordinary copy.
    let still: BTreeSet<StorePath> = lacking(&conn, &newer_infos)
        .await
        .into_iter()
        .map(|i| i.path)
        .collect();
    copy(&conn, &newer_infos, still).await;
    assert!(lacking(&conn, &newer_infos).await.is_empty());
    conn.close().await;
    tb.teardown().unwrap();
}

/// Generation `seed` of four paths: `dep-1.0` (holds the seed), `lib-1.0` (1.3 MB of text and
/// dep's path), `other-1.0` (1 MB of text and the seed, needs nothing) and `top-1.0` (needs lib
/// and other), in a dependency order: dep, lib, other, top.
fn build_four(tb: &Testbed, seed: &str) -> Vec<StorePath> {
    let expr = format!(
        r#"let
  common = {{ system = "x86_64-linux"; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; }};
  dep = derivation (common // {{ name = "dep-1.0"; args = [ "-c" "echo {seed} > $out" ]; }});
  lib = derivation (common // {{
    name = "lib-1.0"; inherit dep;
    args = [ "-c" "mkdir $out && seq 1 200000 > $out/blob && echo $dep >> $out/blob" ];
  }});
  other = derivation (common // {{
    name = "other-1.0";
    args = [ "-c" "mkdir $out && seq 5 150000 > $out/blob && echo {seed} >> $out/blob" ];
  }});
  top = derivation (common // {{
    name = "top-1.0"; inherit lib other;
    args = [ "-c" "echo $lib $other > $out" ];
  }});
in [ dep lib other top ]"#
    );
    let out = Command::new("nix-build")
        .args(["--no-out-link", "-E", &expr])
        .envs(tb.nix_env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| StorePath::new(l.trim()).unwrap())
        .collect()
}

/// The infos of `paths`, in that order.
async fn infos_of(paths: &[StorePath]) -> Vec<PathInfo> {
    let all = closure(paths.last().unwrap()).await;
    paths
        .iter()
        .map(|p| all.iter().find(|i| i.path == *p).unwrap().clone())
        .collect()
}

/// The chunked pipeline, one path per chunk: a clean run imports every chunk; then a corrupted
/// patch in chunk 1 ends the host's delta phase there (chunk 0 imported, chunk 2's path, which
/// needs nothing of chunk 1, not sent), and the ordinary copy brings the rest whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_go_one_after_the_other_and_a_bad_chunk_ends_the_delta_phase() {
    use fleet_executor::copy::delta_chunks::{send_chunked, Chunking};
    let _one = ONE_AT_A_TIME.lock().await;
    let tb = Testbed::start([HostSpec::new("h1")]).unwrap();
    let conn = connector(&tb).connect(&target(&tb, "h1")).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let one_each = Chunking {
        chunks: 100,
        min_paths: 1,
    };
    let local = |p: &StorePath| real_path(p).exists();

    let gen1 = infos_of(&build_four(&tb, "1")).await;
    copy(&conn, &gen1, gen1.iter().map(|i| i.path.clone()).collect()).await;
    let has: Vec<StorePath> = gen1.iter().map(|i| i.path.clone()).collect();

    let gen2 = infos_of(&build_four(&tb, "2")).await;
    assert_eq!(lacking(&conn, &gen2).await.len(), 4);
    let cache = PatchCache::default();
    let done = send_chunked(
        &conn,
        &Privilege::None,
        &gen2,
        &has,
        local,
        real_path,
        &cache,
        tmp.path(),
        None,
        one_each,
    )
    .await;
    assert_eq!(done.bundles, 4, "{done:?}");
    assert_eq!(done.deltas, 4, "{done:?}");
    assert_eq!(done.stopped, None);
    assert_eq!(done.failed, None);
    let want: Vec<StorePath> = gen2.iter().map(|i| i.path.clone()).collect();
    assert_eq!(done.imported, want);
    assert!(lacking(&conn, &gen2).await.is_empty());

    // Generation 3 with lib's patch corrupted.
    let has: Vec<StorePath> = gen2.iter().map(|i| i.path.clone()).collect();
    let gen3 = infos_of(&build_four(&tb, "3")).await;
    let good = PatchCache::default();
    delta::bundle(&gen3, &has, local, real_path, &good, tmp.path())
        .await
        .expect("patches");
    let cache = PatchCache::default();
    for (old, new) in has.iter().zip(&gen3) {
        let mut p = good
            .get(old, &new.path)
            .expect("every path has a patch")
            .to_vec();
        if new.path.name() == "lib-1.0" {
            let mid = p.len() / 2;
            p[mid] ^= 0xff;
            p[mid + 1] ^= 0xff;
        }
        assert!(cache.set(old, &new.path, p));
    }
    let done = send_chunked(
        &conn,
        &Privilege::None,
        &gen3,
        &has,
        local,
        real_path,
        &cache,
        tmp.path(),
        None,
        one_each,
    )
    .await;
    assert_eq!(done.bundles, 2, "chunks 0 and 1 only: {done:?}");
    assert_eq!(done.imported, vec![gen3[0].path.clone()]);
    let why = done.stopped.clone().expect("stopped in chunk 1");
    assert!(why.contains("lib-1.0"), "{why}");
    let still: BTreeSet<StorePath> = lacking(&conn, &gen3)
        .await
        .into_iter()
        .map(|i| i.path)
        .collect();
    let expect: BTreeSet<StorePath> = gen3[1..].iter().map(|i| i.path.clone()).collect();
    assert_eq!(still, expect, "other (chunk 2) was not sent");
    copy(&conn, &gen3, still).await;
    assert!(lacking(&conn, &gen3).await.is_empty());
    let lib = &gen3[1].path;
    let on_host = tb.exec_ok("h1", &format!("sha256sum {lib}/blob")).unwrap();
    let here = Command::new("sha256sum")
        .arg(format!("{lib}/blob"))
        .output()
        .unwrap()
        .stdout;
    assert_eq!(on_host.trim(), String::from_utf8_lossy(&here).trim());
    conn.close().await;
    tb.teardown().unwrap();
}
