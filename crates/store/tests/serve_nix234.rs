//! The regression catcher for newer Nix: the serve client (protocol 2.7) and the export stream
//! against Nix 2.34's own `nix-store --serve --write` and `nix-store --import`, run in the
//! Debian sid root (`fleet_testbed::userland`) on a destination store on the 2.34 side. What
//! 2.34 registers must be, byte for byte, what fleet sent. Skipped (saying why) only when the
//! sid root cannot be built because the Debian registry cannot be reached.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{build_toy, TempStore};
use fleet_store::copy::{Destination, FanOutOptions};
use fleet_store::local::{self, LocalStore};
use fleet_store::serve::AddEvent;
use fleet_store::PathInfo;
use fleet_testbed::userland::{ensure_root, nix_wrappers};
use fleet_testbed::{Error, Userland};
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(120);

/// Wrappers running sid's Nix (2.34) on this machine's `/nix` and `/tmp`, or `None` (printed)
/// when the registry cannot be reached.
fn nix234(case: &str) -> Option<(tempfile::TempDir, PathBuf)> {
    let root = match ensure_root(Userland::Sid) {
        Ok(r) => r.expect("sid has a root"),
        Err(e @ Error::RegistryUnreachable { .. }) => {
            eprintln!("SKIPPED {case}: {e}");
            return None;
        }
        Err(e) => panic!("the sid root: {e}"),
    };
    assert!(root.nix_version.contains("2.34."), "{}", root.nix_version);
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    // The test runs in the crate directory: share the repository so the working directory stays.
    nix_wrappers(&root, &bin, &[fleet_testbed::repo_root()]).unwrap();
    let nix_store = bin.join("nix-store");
    Some((dir, nix_store))
}

/// `nix-store ARGS` of Nix 2.34 on the store `dst`; stdout (bytes), asserting success.
fn nix234_store(nix_store: &Path, dst: &TempStore, args: &[&str]) -> Vec<u8> {
    let out = Command::new(nix_store)
        .current_dir("/tmp")
        .env("NIX_CONFIG", common::NIX_CONFIG)
        .args(["--store", &dst.arg()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nix-store {args:?} (2.34): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Nix 2.34 holds exactly `infos`: valid, verified, same hash and size, same references, and a
/// `--dump` identical to the NAR fleet made of the source.
fn assert_registered_exactly(nix_store: &Path, dst: &TempStore, infos: &[PathInfo]) {
    for i in infos {
        let p = i.path.as_str();
        nix234_store(nix_store, dst, &["--verify-path", p]);
        let hash = nix234_store(nix_store, dst, &["-q", "--hash", p]);
        assert_eq!(String::from_utf8_lossy(&hash).trim(), i.nar_hash, "{p}");
        let refs = nix234_store(nix_store, dst, &["-q", "--references", p]);
        let mut refs: Vec<String> = String::from_utf8_lossy(&refs)
            .lines()
            .map(str::to_owned)
            .collect();
        refs.sort();
        let mut want: Vec<String> = i.references.iter().map(|r| r.to_string()).collect();
        want.sort();
        assert_eq!(refs, want, "{p}");
        let dump = nix234_store(nix_store, dst, &["--dump", p]);
        let mut ours = Vec::new();
        fleet_store::nar::dump(&LocalStore::system().real_path(&i.path), &mut ours).unwrap();
        assert_eq!(dump.len() as u64, i.nar_size, "{p}");
        assert!(dump == ours, "{p}: 2.34's NAR differs from fleet's");
    }
}

/// The machine's store as Nix 2.34 sees it: fleet's local queries (`nix-store --serve`) go to
/// 2.34 too, so nothing in these tests talks to the machine's Nix 2.8.
fn system234(nix_store: &Path) -> LocalStore {
    LocalStore::system().with_nix_store(nix_store)
}

async fn toy(nix_store: &Path, tag: &str) -> Vec<PathInfo> {
    let top = build_toy(6, tag, 64);
    local::closure_infos(&system234(nix_store), &[top])
        .await
        .unwrap()
}

#[tokio::test]
async fn serve_protocol_2_7_with_nix_2_34_copies_byte_for_byte() {
    let Some((_dir, nix_store)) = nix234("serve protocol against Nix 2.34") else {
        return;
    };
    let infos = toy(&nix_store, "nix234-serve").await;
    let all: Vec<_> = infos.iter().map(|i| i.path.clone()).collect();
    let dst = TempStore::new();
    let store = LocalStore::chroot(dst.dir.path()).with_nix_store(&nix_store);
    let mut s = store.serve(true).await.unwrap();
    assert_eq!(
        s.client().version(),
        0x207,
        "2.34 speaks serve protocol 2.7"
    );
    let valid = s
        .client()
        .query_valid_paths(&all, true, false)
        .await
        .unwrap();
    assert!(valid.is_empty());
    let mut acked = 0;
    let sum = tokio::time::timeout(
        T,
        s.client()
            .add_paths(&infos, &LocalStore::system(), &mut |e| {
                if matches!(e, AddEvent::Acked { .. }) {
                    acked += 1;
                }
            }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((sum.paths, acked), (infos.len(), infos.len()));
    // 2.34's answers to QueryValidPaths, QueryPathInfos and QueryClosure parse and agree.
    let valid = s
        .client()
        .query_valid_paths(&all, false, false)
        .await
        .unwrap();
    assert_eq!(valid.len(), infos.len());
    let mut remote = s.client().query_path_infos(&all).await.unwrap();
    remote.sort_by(|a, b| a.path.cmp(&b.path));
    let mut local_sorted = infos.clone();
    local_sorted.sort_by(|a, b| a.path.cmp(&b.path));
    for (a, b) in remote.iter().zip(&local_sorted) {
        assert_eq!(
            (&a.path, &a.nar_hash, a.nar_size, &a.references, &a.deriver),
            (&b.path, &b.nar_hash, b.nar_size, &b.references, &b.deriver)
        );
    }
    assert_eq!(remote.len(), infos.len());
    let top = infos.last().unwrap().path.clone();
    let closure = s.client().query_closure(&[top], false).await.unwrap();
    assert_eq!(closure, all.iter().cloned().collect());
    s.finish().await.unwrap();
    assert_registered_exactly(&nix_store, &dst, &infos);
}

#[tokio::test]
async fn export_stream_into_nix_2_34_import_plain_and_zstd() {
    let Some((_dir, nix_store)) = nix234("import into Nix 2.34") else {
        return;
    };
    let infos = toy(&nix_store, "nix234-import").await;
    // Plain export stream.
    let dst = TempStore::new();
    let mut child = Command::new(&nix_store)
        .current_dir("/tmp")
        .env("NIX_CONFIG", common::NIX_CONFIG)
        .args(["--store", &dst.arg(), "--import"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    fleet_store::export::write_export(child.stdin.take().unwrap(), &infos, &system234(&nix_store))
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_registered_exactly(&nix_store, &dst, &infos);

    // What fleet sends by default: the fan-out's stream, zstd, `zstd -dc | nix-store --import`.
    let dst = TempStore::new();
    let mut child = tokio::process::Command::new("sh")
        .current_dir("/tmp")
        .env("NIX_CONFIG", common::NIX_CONFIG)
        .args([
            "-c",
            &format!(
                "zstd -dc | '{}' --store '{}' --import",
                nix_store.display(),
                dst.arg()
            ),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel(16);
    let dests = vec![Destination {
        label: "nix234".into(),
        missing: infos.iter().map(|i| i.path.clone()).collect(),
        tx,
    }];
    let (sys, opts) = (system234(&nix_store), FanOutOptions::default());
    let (_, res) = tokio::join!(
        fleet_store::copy::fan_out(&sys, &infos, dests, &opts),
        fleet_store::export::write_export_stream(rx, stdin, Some(3), "zstd")
    );
    assert_eq!(res.unwrap().0, infos.len());
    assert!(child.wait().await.unwrap().success());
    assert_registered_exactly(&nix_store, &dst, &infos);
}
