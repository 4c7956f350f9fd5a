#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use fleet_store::local::LocalStore;
use fleet_store::StorePath;

pub const NIX_CONFIG: &str = "substituters =\nsandbox = false\nextra-platforms = aarch64-linux";

pub fn nix_store() -> Command {
    let mut c = Command::new("nix-store");
    c.env("NIX_CONFIG", NIX_CONFIG);
    c
}

/// Build the toy closure (in the system store) and return its top path.
pub fn build_toy(n: usize, tag: &str, kb: usize) -> StorePath {
    let nix = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/toy.nix");
    let out = Command::new("nix-build")
        .env("NIX_CONFIG", NIX_CONFIG)
        .args([
            nix,
            "--no-out-link",
            "--arg",
            "n",
            &n.to_string(),
            "--argstr",
            "tag",
            tag,
            "--arg",
            "kb",
            &kb.to_string(),
        ])
        .output()
        .expect("nix-build runs");
    assert!(
        out.status.success(),
        "nix-build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    StorePath::new(String::from_utf8(out.stdout).unwrap().trim().to_string()).unwrap()
}

/// A private chroot store in a temp dir, removed on drop.
pub struct TempStore {
    pub dir: tempfile::TempDir,
}

impl TempStore {
    pub fn new() -> Self {
        TempStore {
            dir: tempfile::Builder::new()
                .prefix("fleet-store-test")
                .tempdir()
                .unwrap(),
        }
    }
    pub fn store(&self) -> LocalStore {
        LocalStore::chroot(self.dir.path())
    }
    pub fn arg(&self) -> String {
        self.dir.path().display().to_string()
    }
    pub fn is_valid(&self, p: &StorePath) -> bool {
        nix_store()
            .args(["--store", &self.arg(), "--check-validity", p.as_str()])
            .output()
            .unwrap()
            .status
            .success()
    }
    pub fn verify(&self, p: &StorePath) {
        let o = nix_store()
            .args(["--store", &self.arg(), "--verify-path", p.as_str()])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "verify-path {p}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    pub fn hash(&self, p: &StorePath) -> String {
        query_hash(Some(&self.arg()), p)
    }
    pub fn exists_on_disk(&self, p: &StorePath) -> bool {
        self.dir
            .path()
            .join(p.as_str().trim_start_matches('/'))
            .symlink_metadata()
            .is_ok()
    }
}

pub fn query_hash(store: Option<&str>, p: &StorePath) -> String {
    let mut c = nix_store();
    if let Some(s) = store {
        c.args(["--store", s]);
    }
    let o = c.args(["-q", "--hash", p.as_str()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

pub fn dump_with_nix(p: &Path) -> Vec<u8> {
    let o = nix_store().arg("--dump").arg(p).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}
