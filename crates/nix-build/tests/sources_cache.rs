//! The sources' fingerprints (docs/evaluation.md, "The evaluation cache"): an unchanged pin or
//! host folder is not put in the store again, and every change is seen: an edit within the
//! racy window, a pin edit, a changed spec (fleet.toml), a deleted store path.

mod common;

use std::process::Command;
use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};
use common::*;
use fleet_nix_build::{evaluate, EvaluatedHost, HostBuildSpec, PinSpec};

/// A `nix-instantiate` on the PATH given to Nix that logs every expression it reads on stdin
/// (one line per process that stores sources: their expression's prelude says `labelled`) before running the real one.
fn logging_nix(dir: &Utf8Path) -> (String, Utf8PathBuf) {
    let bin = dir.join("bin");
    let log = dir.join("instantiate.log");
    std::fs::create_dir_all(&bin).unwrap();
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v nix-instantiate"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let script = format!(
        "#!/bin/sh\nin=$(cat)\ncase \"$in\" in *labelled*) echo sources >> '{log}';; esac\n\
         printf '%s' \"$in\" | exec {} \"$@\"\n",
        real.trim()
    );
    std::fs::write(bin.join("nix-instantiate"), script).unwrap();
    Command::new("chmod")
        .args(["+x", bin.join("nix-instantiate").as_str()])
        .status()
        .unwrap();
    let path = format!("{bin}:{}", std::env::var("PATH").unwrap_or_default());
    (path, log)
}

/// How many processes stored sources so far.
fn stored(log: &Utf8Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |t| t.lines().count())
}

async fn eval_one(dir: &Utf8Path, path: &str, spec: &HostBuildSpec) -> EvaluatedHost {
    let (mut opts, _) = options(dir, NIX_CONFIG);
    opts.eval_cache = true;
    opts.nix_env.push(("PATH".into(), path.into()));
    let mut r = evaluate(std::slice::from_ref(spec), &opts).await;
    r.remove(0).1.unwrap_or_else(|e| panic!("{e}"))
}

fn nix_store(args: &[&str]) -> String {
    let out = Command::new("nix-store")
        .args(args)
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nix-store {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn unchanged_sources_are_not_stored_again_and_every_change_is_seen() {
    let dir = tempdir();
    let (path, log) = logging_nix(&dir.path);
    let pin = dir.path.join("nixpkgs");
    assert!(Command::new("cp")
        .args(["-R", standin().as_str(), pin.as_str()])
        .status()
        .unwrap()
        .success());
    let id = unique();
    let config = write(
        &dir.path,
        "hosts/a/configuration.nix",
        &format!("{{ networking.hostName = \"a\"; environment.etc.id.text = \"{id}\"; }}\n"),
    );
    let mut spec = spec("a", "x86_64-linux", PinSpec::Path(pin.clone()), &config);

    // Files changed within the last second are racy: stored again every time until older.
    let first = eval_one(&dir.path, &path, &spec).await;
    assert_eq!(stored(&log), 1);
    // An edit that keeps the size and the modification time, right after: seen.
    let mtime = std::fs::metadata(&config).unwrap().modified().unwrap();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"a\"", "\"b\"");
    std::fs::write(&config, text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&config)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let edited = eval_one(&dir.path, &path, &spec).await;
    assert_eq!(stored(&log), 2, "racy sources are stored again");
    assert_ne!(first.toplevel_drv, edited.toplevel_drv);

    // Once the files are older than the racy window, an unchanged run stores nothing.
    std::thread::sleep(Duration::from_millis(2100));
    let recorded = eval_one(&dir.path, &path, &spec).await;
    assert_eq!(recorded, edited);
    assert_eq!(stored(&log), 3);
    let again = eval_one(&dir.path, &path, &spec).await;
    assert_eq!(again, edited);
    assert_eq!(
        stored(&log),
        3,
        "unchanged sources come from their fingerprints"
    );

    // A pin edit: stored again (only the pin would do; the tree is in the same process), and
    // the package (which links the pin) changes.
    std::fs::write(pin.join("notes.txt"), "a pin edit\n").unwrap();
    let pin_edit = eval_one(&dir.path, &path, &spec).await;
    assert_eq!(stored(&log), 4);
    assert_ne!(pin_edit.package_drv, again.package_drv);

    // Another system in fleet.toml: another evaluation, no source stored again once the pin
    // edit is old enough.
    std::thread::sleep(Duration::from_millis(2100));
    eval_one(&dir.path, &path, &spec).await;
    let stored_before = stored(&log);
    spec.system = "aarch64-linux".into();
    let other = eval_one(&dir.path, &path, &spec).await;
    assert_eq!(stored(&log), stored_before);
    assert_ne!(other.toplevel, pin_edit.toplevel);

    // The host folder's store copy deleted (with the derivations that refer to it): stored
    // again, never used from the fingerprint.
    let drv = nix_store(&["--query", "--references", &other.package_drv]);
    let tree = drv
        .lines()
        .find(|l| l.ends_with("-fleet-config"))
        .expect("the package's derivation refers to the host's files")
        .to_owned();
    let referrers = nix_store(&["--query", "--referrers-closure", &tree]);
    let mut delete = vec!["--delete"];
    delete.extend(referrers.lines());
    nix_store(&delete);
    let after_gc = eval_one(&dir.path, &path, &spec).await;
    assert_eq!(
        stored(&log),
        stored_before + 1,
        "the deleted copy is stored again"
    );
    assert_eq!(after_gc, other);
    assert!(Utf8Path::new(&tree).exists());
}
