//! A host's GC root (docs/evaluation.md, step 6) is made only when it is not in place already:
//! a root that links to the package and is registered with Nix is kept without running Nix; a
//! missing or stale one is made again.

mod common;

use std::process::Command;

use camino::Utf8Path;
use common::*;
use fleet_nix_build::evaluate_and_build;

/// A `nix-store` on the PATH given to Nix that logs its arguments (one line per process)
/// before running the real one.
fn logging_nix_store(dir: &Utf8Path) -> (String, camino::Utf8PathBuf) {
    let bin = dir.join("bin");
    let log = dir.join("nix-store.log");
    std::fs::create_dir_all(&bin).unwrap();
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v nix-store"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> '{log}'\nexec {} \"$@\"\n",
        real.trim()
    );
    std::fs::write(bin.join("nix-store"), script).unwrap();
    Command::new("chmod")
        .args(["+x", bin.join("nix-store").as_str()])
        .status()
        .unwrap();
    let path = format!("{bin}:{}", std::env::var("PATH").unwrap_or_default());
    (path, log)
}

#[tokio::test]
async fn roots_in_place_are_kept_and_missing_or_stale_ones_made_again() {
    let dir = tempdir();
    let (path, log) = logging_nix_store(&dir.path);
    let config = write(
        &dir.path,
        "hosts/a/configuration.nix",
        &format!(
            "{{ networking.hostName = \"a\"; environment.etc.id.text = \"{}\"; }}\n",
            unique()
        ),
    );
    let specs = [spec("a", "x86_64-linux", path_pin(), &config)];
    let root = dir.path.join(".fleet/gcroots/a");
    // How many `nix-store --realise … --add-root <root>` made the host's root so far.
    let made = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!("--add-root {root} ")))
            .count()
    };
    let build = || async {
        let (mut opts, _) = options(&dir.path, NIX_CONFIG);
        opts.nix_env.push(("PATH".into(), path.clone()));
        let mut r = evaluate_and_build(&specs, &opts).await;
        r.remove(0).1.unwrap_or_else(|e| panic!("{e}"))
    };

    let first = build().await;
    assert_eq!(made(), 1);
    assert_eq!(readlink(&root), first.package);
    // In place: kept, no Nix process for it.
    assert_eq!(build().await, first);
    assert_eq!(made(), 1, "a root in place is not made again");
    // Missing: made again.
    std::fs::remove_file(&root).unwrap();
    build().await;
    assert_eq!(made(), 2);
    assert_eq!(readlink(&root), first.package);
    // Stale (links elsewhere): made again.
    std::fs::remove_file(&root).unwrap();
    std::os::unix::fs::symlink(&first.toplevel, &root).unwrap();
    build().await;
    assert_eq!(made(), 3);
    assert_eq!(readlink(&root), first.package);
    // Nix follows it: the package is not collected.
    let out = Command::new("nix-store")
        .args(["--query", "--roots", &first.package])
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .unwrap();
    let roots = String::from_utf8_lossy(&out.stdout);
    assert!(roots.contains(root.as_str()), "{roots}");
}
