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
