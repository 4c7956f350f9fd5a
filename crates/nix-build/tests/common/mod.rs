//! Helpers for the fleet-nix-build tests: the nixpkgs stand-in, pins, Nix settings, configurations.
#![allow(dead_code)]

use std::process::Command;
use std::sync::{Arc, Mutex};

use camino::{Utf8Path, Utf8PathBuf};
use fleet_nix_build::{BuildEvent, BuildOptions, HostBuildSpec, PinSpec};

pub const NIX_CONFIG: &str = "substituters =\nsandbox = false\nextra-platforms = aarch64-linux";
pub const NIX_CONFIG_NO_EMULATION: &str = "substituters =\nsandbox = false";

pub fn standin() -> Utf8PathBuf {
    Utf8Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/nixpkgs")
}

/// A `file://` tarball pin of the stand-in (via `tests/nixpkgs/make-pin.sh`).
pub fn tarball_pin(dir: &Utf8Path) -> PinSpec {
    let out = dir.join("nixpkgs.tar.gz");
    let o = Command::new(standin().join("make-pin.sh"))
        .arg(out.as_str())
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .expect("make-pin.sh runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = \"")))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap()
            .to_owned()
    };
    PinSpec::Tarball {
        url: field("url"),
        sha256: field("sha256"),
    }
}

pub fn path_pin() -> PinSpec {
    PinSpec::Path(standin())
}

pub struct TestDir {
    _tmp: tempfile::TempDir,
    pub path: Utf8PathBuf,
}

pub fn tempdir() -> TestDir {
    let tmp = tempfile::Builder::new()
        .prefix("fleet build test ")
        .tempdir()
        .unwrap();
    let path = Utf8PathBuf::from_path_buf(tmp.path().to_owned()).unwrap();
    TestDir { _tmp: tmp, path }
}

/// Write `text` to `dir/rel` (creating folders) and return the path.
pub fn write(dir: &Utf8Path, rel: &str, text: &str) -> Utf8PathBuf {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

/// Something unique so a test's derivations are new to the store (and really get built).
pub fn unique() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{n}-{}", std::process::id())
}

pub fn spec(name: &str, system: &str, pin: PinSpec, config: &Utf8Path) -> HostBuildSpec {
    HostBuildSpec {
        name: name.into(),
        system: system.into(),
        pin,
        config: config.to_owned(),
        cross: false,
        nix_path: Vec::new(),
        flake: None,
    }
}

/// Options with `nix_config` and an event recorder.
pub fn options(
    fleet_dir: &Utf8Path,
    nix_config: &str,
) -> (BuildOptions, Arc<Mutex<Vec<BuildEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let mut opts = BuildOptions::new(fleet_dir);
    opts.nix_env = vec![("NIX_CONFIG".into(), nix_config.into())];
    opts.on_event = Some(Arc::new(move |e| sink.lock().unwrap().push(e)));
    (opts, events)
}

/// Every derivation built, over all the realises of a run.
pub fn built_drvs(events: &Mutex<Vec<BuildEvent>>) -> Vec<String> {
    events
        .lock()
        .unwrap()
        .iter()
        .flat_map(|e| match e {
            BuildEvent::BuildFinished { built, .. } => built.clone(),
            _ => Vec::new(),
        })
        .collect()
}

pub fn readlink(p: impl AsRef<std::path::Path>) -> String {
    std::fs::read_link(p)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}
