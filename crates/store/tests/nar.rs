//! NAR output compared byte for byte with `nix-store --dump`.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};

use fleet_store::nar;

#[test]
fn nar_matches_nix_store_dump() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("tree");
    fs::create_dir(&root).unwrap();
    // Names whose byte order differs from locale order, spaces, unicode, dots, leading dashes.
    for name in [
        "a",
        "B",
        "b",
        "Z",
        "_x",
        "a b",
        "a-b",
        "a_b",
        "a.b",
        "aB",
        "ab",
        "é",
        "ü",
        "Ä",
        "z",
        "-dash",
        ".hidden",
        "日本",
        "tab\tname",
        "new\nline",
    ] {
        fs::write(root.join(name), format!("content of {name}\n")).unwrap();
    }
    fs::write(root.join("empty-file"), b"").unwrap();
    fs::write(root.join("seven"), b"1234567").unwrap();
    fs::write(root.join("eight"), b"12345678").unwrap();
    let exe = root.join("run me");
    fs::write(&exe, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let owner_x_only = root.join("owner-x");
    fs::write(&owner_x_only, "x").unwrap();
    fs::set_permissions(&owner_x_only, fs::Permissions::from_mode(0o700)).unwrap();
    let group_x_only = root.join("group-x");
    fs::write(&group_x_only, "x").unwrap();
    fs::set_permissions(&group_x_only, fs::Permissions::from_mode(0o654)).unwrap();
    fs::create_dir_all(root.join("empty dir")).unwrap();
    fs::create_dir_all(root.join("nested/deeper/deepest")).unwrap();
    fs::write(root.join("nested/deeper/deepest/f"), "deep").unwrap();
    symlink("../a", root.join("nested/link-up")).unwrap();
    symlink("/nonexistent/target with space", root.join("dangling")).unwrap();
    symlink("nested", root.join("dir-link")).unwrap();
    // A 20 MiB file, streamed.
    let mut big = fs::File::create(root.join("big")).unwrap();
    let block: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    for _ in 0..20 {
        big.write_all(&block).unwrap();
    }
    big.write_all(b"tail").unwrap();
    drop(big);

    let mut ours = Vec::new();
    let size = nar::dump(&root, &mut ours).unwrap();
    let theirs = common::dump_with_nix(&root);
    assert_eq!(size as usize, ours.len());
    assert!(
        ours == theirs,
        "NAR differs from nix-store --dump (ours {} bytes, nix {} bytes)",
        ours.len(),
        theirs.len()
    );
    let (hash, n) = nar::nar_hash(&root).unwrap();
    assert_eq!(n, theirs.len() as u64);
    assert_eq!(hash, nar::sha256_nix32(&theirs));

    // Top-level regular file, executable, symlink, empty dir.
    for p in [
        root.join("seven"),
        root.join("run me"),
        root.join("dangling"),
        root.join("empty dir"),
        root.join("empty-file"),
    ] {
        let mut ours = Vec::new();
        nar::dump(&p, &mut ours).unwrap();
        assert_eq!(ours, common::dump_with_nix(&p), "{}", p.display());
    }
}

#[tokio::test]
async fn chunked_dump_equals_sync_dump() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("d");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("f"), vec![42u8; 300_001]).unwrap();
    fs::create_dir(root.join("e")).unwrap();
    let mut sync = Vec::new();
    nar::dump(&root, &mut sync).unwrap();
    let mut rx = nar::dump_chunks(root.clone(), 4096, 2);
    let mut chunked = Vec::new();
    let mut max = 0;
    while let Some(c) = rx.recv().await {
        let c = c.unwrap();
        max = max.max(c.len());
        chunked.extend_from_slice(&c);
    }
    assert_eq!(chunked, sync);
    assert!(max <= 4096);
    // A missing path is an error item, not a hang.
    let mut rx = nar::dump_chunks(root.join("missing"), 4096, 2);
    assert!(rx.recv().await.unwrap().is_err());
}
