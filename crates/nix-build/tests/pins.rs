//! A `path` pin that is not a git checkout is copied without `.git` and `result*`.

mod common;

use common::*;
use fleet_nix_build::{evaluate_and_build, PinSpec};

#[tokio::test]
async fn a_plain_folder_pin_leaves_git_and_result_links_out() {
    let dir = tempdir();
    let pin = dir.path.join("nixpkgs");
    let out = std::process::Command::new("cp")
        .args(["-R", standin().as_str(), pin.as_str()])
        .output()
        .unwrap();
    assert!(out.status.success());
    // Not a git checkout (git rejects this .git), but it has one, and build results.
    write(&pin, ".git/objects/pack/big.pack", &"x".repeat(1 << 20));
    std::os::unix::fs::symlink(
        "/nix/store/00000000000000000000000000000000-x",
        pin.join("result"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "/nix/store/00000000000000000000000000000000-y",
        pin.join("result-man"),
    )
    .unwrap();
    write(
        &pin,
        "notes.txt",
        "kept: not tracked by any git, not excluded\n",
    );
    let config = write(
        &dir.path,
        "hosts/a/configuration.nix",
        "{ networking.hostName = \"a\"; }\n",
    );
    let (opts, _) = options(&dir.path, NIX_CONFIG);
    let results = evaluate_and_build(
        &[spec("a", "x86_64-linux", PinSpec::Path(pin), &config)],
        &opts,
    )
    .await;
    let built = results[0].1.as_ref().unwrap_or_else(|e| panic!("{e}"));
    let nixpkgs = std::path::Path::new(&built.package).join("nixpkgs");
    assert!(nixpkgs.join("nixos/default.nix").is_file());
    assert!(nixpkgs.join("notes.txt").is_file());
    for gone in [".git", "result", "result-man"] {
        assert!(
            std::fs::symlink_metadata(nixpkgs.join(gone)).is_err(),
            "{gone} was copied"
        );
    }
}
