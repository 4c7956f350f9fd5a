//! `fleet status` and `fleet rollback` end to end.

use fleet_e2e::{config, named as host, Fleet, HostSpec};

#[test]
fn in_sync_then_drifted_then_rolled_back_and_unreachable_shown() {
    let f = Fleet::start([
        HostSpec::new("a"),
        HostSpec::new("b").sudo_password(),
        HostSpec::new("c"),
    ]);
    // Before any apply: reachable, nothing deployed.
    let run = f.fleet(&["status", "--json", "--no-eval"]);
    run.expect_code(0);
    let s = run.json();
    for h in ["a", "b", "c"] {
        assert_eq!(host(&s, h)["reachable"], true);
        assert!(host(&s, h)["current"].is_null());
        assert!(host(&s, h)["in_sync"].is_null(), "not evaluated");
    }

    f.fleet(&["apply"]).expect_code(0);
    let gen1 = f.link("a", "/run/current-system").unwrap();
    let pkg1 = f.link("a", "/etc/nixos/current-configuration").unwrap();
    f.set_config("a", &config("a", &["htop", "nano"]));
    f.fleet(&["apply", "--on", "a"]).expect_code(0);
    let gen2 = f.link("a", "/run/current-system").unwrap();
    assert_ne!(gen1, gen2);

    let run = f.fleet(&["status", "--json"]);
    run.expect_code(0);
    let s = run.json();
    for h in ["a", "b", "c"] {
        let st = host(&s, h);
        assert_eq!(st["reachable"], true, "{h}");
        assert_eq!(st["in_sync"], true, "{h}");
        assert_eq!(st["current"], st["desired"], "{h}");
        assert_eq!(st["needs_reboot"], false, "{h}");
        assert!(st["deployed"]["by"]
            .as_str()
            .unwrap()
            .starts_with("tester@"));
        assert!(st["deployed"]["at"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(host(&s, "a")["generation"], 2);
    assert_eq!(host(&s, "b")["generation"], 1);
    let table = f.fleet(&["status"]);
    assert!(table.stdout.contains("in sync"), "{}", table.stdout);

    // Switched by hand to another system: drifted.
    f.sh("a", &format!("{gen1}/bin/switch-to-configuration test"));
    let run = f.fleet(&["status", "--json"]);
    run.expect_code(0);
    let st = host(&run.json(), "a").clone();
    assert_eq!(st["in_sync"], false);
    assert_eq!(st["current"], gen1.as_str());
    assert_eq!(st["desired"], gen2.as_str());
    assert_eq!(host(&run.json(), "b")["in_sync"], true);
    assert!(f.fleet(&["status"]).stdout.contains("drifted"));

    // Back to gen2 with fleet, then roll back to the previous generation.
    f.fleet(&["apply", "--on", "a"]).expect_code(0);
    assert_eq!(f.link("a", "/run/current-system").unwrap(), gen2);
    let before = host(&f.fleet(&["status", "--json"]).json(), "a")["generation"]
        .as_u64()
        .unwrap();
    let run = f.fleet(&["rollback", "--on", "a,b", "--json"]);
    // b has no generation before its first: it fails, a rolls back.
    run.expect_code(1);
    let outcomes = run.outcomes();
    assert_eq!(outcomes["a"], "rolled-back");
    assert_eq!(outcomes["b"], "failed");
    assert!(
        run.stdout.contains("no generation before"),
        "{}",
        run.stdout
    );
    assert_eq!(f.link("a", "/run/current-system").unwrap(), gen1);
    assert_eq!(
        f.link("a", "/etc/nixos/current-configuration").unwrap(),
        pkg1,
        "the deployment package of that generation is linked again"
    );
    let s = f.fleet(&["status", "--json"]).json();
    let st = host(&s, "a");
    assert_eq!(st["generation"].as_u64().unwrap(), before - 1);
    assert_eq!(st["current"], gen1.as_str());
    assert_eq!(st["in_sync"], false, "fleet.toml still wants gen2");

    // An unreachable host is shown as such while the others report.
    f.tb.stop_sshd("c").unwrap();
    let run = f.fleet(&["status", "--json", "--no-eval"]);
    run.expect_code(1);
    let s = run.json();
    assert_eq!(host(&s, "c")["reachable"], false);
    assert!(host(&s, "c")["error"].as_str().unwrap().contains("refused"));
    assert_eq!(host(&s, "a")["reachable"], true);
    assert_eq!(host(&s, "b")["reachable"], true);
    let table = f.fleet(&["status", "--no-eval"]);
    assert!(table.stdout.contains("unreachable"), "{}", table.stdout);
    f.tb.start_sshd("c").unwrap();

    f.assert_sound("a", &[Some(&gen1)]);
    let b = f.link("b", "/run/current-system");
    f.assert_sound("b", &[b.as_deref()]);
    let c = f.link("c", "/run/current-system");
    f.assert_sound("c", &[c.as_deref()]);
}

#[test]
fn status_of_thirty_hosts_without_evaluation() {
    let f = Fleet::start((0..30).map(|i| HostSpec::new(format!("h{i:02}"))));
    let run = f.fleet(&["status", "--json", "--no-eval"]);
    run.expect_code(0);
    let s = run.json();
    assert_eq!(s.as_array().unwrap().len(), 30);
    assert!(s.as_array().unwrap().iter().all(|h| h["reachable"] == true));
    eprintln!("fleet status --no-eval of 30 hosts: {:.2?}", run.took);
}
