//! Deltas end to end (docs/deltas.md): after a nixpkgs bump (the stand-in's `fleet.massRebuild`:
//! every store path gets a new hash, bytes differ only where store paths are embedded), `fleet
//! apply` sends the paths as patches against the host's own paths of the same packages, and the
//! host ends up on the new system exactly as with whole paths. `--no-deltas` sends them whole.

use fleet_e2e::{config_with, current, Fleet, HostSpec, Run};

/// The fleet log lines of a `--json` run.
fn fleet_lines(run: &Run) -> Vec<String> {
    run.json_lines()
        .iter()
        .filter(|e| e["type"] == "log" && e["stream"] == "fleet")
        .filter_map(|e| e["line"].as_str().map(str::to_owned))
        .collect()
}

/// (patch bytes, NAR bytes) of the delta line, if any.
fn patched(run: &Run) -> Option<(u64, u64)> {
    let line = fleet_lines(run)
        .into_iter()
        .find(|l| l.contains("as patches"))?;
    let inner = line.split_once("as patches (")?.1;
    let (patch, rest) = inner.split_once(" bytes for ")?;
    let nar = rest.split_once(" bytes of NAR")?.0;
    Some((patch.parse().ok()?, nar.parse().ok()?))
}

#[test]
fn after_a_nixpkgs_bump_paths_travel_as_patches_and_the_host_is_the_same() {
    let f = Fleet::start([HostSpec::new("d")]);
    let system = |rebuild: &str| {
        config_with(
            "d",
            &format!(
                "fleet.bench = {{ paths = 8; totalMB = 4; }}; fleet.massRebuild = \"{rebuild}\";"
            ),
        )
    };
    f.set_config("d", &system(""));
    f.fleet(&["apply"]).expect_code(0);

    // The bump: every path of the system is new.
    f.set_config("d", &system("2"));
    let run = f.fleet(&["apply", "--json"]);
    run.expect_code(0);
    assert_eq!(run.outcomes()["d"], "applied");
    let (patch, nar) = patched(&run).unwrap_or_else(|| panic!("{:?}", fleet_lines(&run)));
    assert!(
        nar > 4_000_000 && patch * 50 < nar,
        "{patch} bytes of patches for {nar} bytes of NAR"
    );
    // The plan said so beforehand: the same-name paths as patches, far below the compressed
    // estimate, and within a few times of what the patches took.
    let plan = run
        .json_lines()
        .into_iter()
        .find(|e| e["type"] == "plan")
        .expect("a plan event");
    let expected = &plan["plan"]["hosts"][0]["copy"]["expected"];
    let (full, compressed, delta) = (
        expected["full"].as_u64().unwrap_or(0),
        expected["compressed"].as_u64().unwrap_or(0),
        expected["delta"].as_u64().unwrap_or(0),
    );
    assert!(full > 4_000_000, "{expected}");
    assert!(
        compressed * 2 < full && delta * 20 < compressed,
        "{expected}"
    );
    assert!(
        expected["delta_paths"].as_u64().unwrap_or(0) >= 8,
        "{expected}"
    );
    assert!(
        delta > patch / 4 && delta < patch * 20 + 20_000,
        "{expected} vs {patch}"
    );
    let new = current(&f, "d").unwrap();
    f.assert_sound("d", &[Some(&new)]);

    // --no-deltas: whole paths, same result.
    f.set_config("d", &system("3"));
    let run = f.fleet(&["apply", "--json", "--no-deltas"]);
    run.expect_code(0);
    assert_eq!(patched(&run), None, "{:?}", fleet_lines(&run));
    let newer = current(&f, "d").unwrap();
    assert_ne!(newer, new);
    f.assert_sound("d", &[Some(&newer)]);
}
