//! `fleet plan` end to end, and saved plans applied with `fleet apply FILE`.

use fleet_e2e::{config, named as host, Fleet, HostSpec, Testbed};

fn names(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn install_then_only_the_changed_host_updates_with_its_diff_and_unreachable_is_reported() {
    let f = Fleet::start([
        HostSpec::new("pi1").system("aarch64-linux").tag("pi"),
        HostSpec::new("web1"),
        HostSpec::new("web2").sudo_password(),
    ]);

    // A first plan: everything to install, nothing touched on the hosts.
    let run = f.fleet(&["plan", "--json"]);
    run.expect_code(0);
    let plan = run.json();
    assert_eq!(plan["format"], 2);
    for h in ["pi1", "web1", "web2"] {
        let p = host(&plan, h);
        assert_eq!(p["action"], "install", "{h}");
        assert!(p["current"].is_null());
        assert!(p["copy"]["paths"].as_array().unwrap().len() > 10);
        assert!(p["copy"]["bytes"].as_u64().unwrap() > 0);
        assert_eq!(p["reboot"], false, "install never asks for a reboot");
        assert!(f.store_paths(h).is_empty(), "plan copies nothing");
    }
    assert_eq!(host(&plan, "pi1")["system"], "aarch64-linux");
    let human = f.fleet(&["plan"]);
    human.expect_code(0);
    assert!(human
        .stdout
        .contains("Plan: 3 to install, 0 to update, 0 unchanged, 0 errors."));

    f.fleet(&["apply"]).expect_code(0);
    let run = f.fleet(&["plan", "--json"]);
    run.expect_code(0);
    for h in ["pi1", "web1", "web2"] {
        assert_eq!(host(&run.json(), h)["action"], "unchanged", "{h}");
    }

    // Change web1 only: a new package, an upgraded one, one removed.
    f.set_config(
        "web1",
        "{ pkgs, ... }: { networking.hostName = \"web1\"; \
         environment.systemPackages = [ pkgs.jq pkgs.git ]; \
         fleet.packageVersions.openssl = \"3.0.14\"; }",
    );
    let run = f.fleet(&["plan", "--json"]);
    run.expect_code(0);
    let plan = run.json();
    assert_eq!(host(&plan, "pi1")["action"], "unchanged");
    assert_eq!(host(&plan, "web2")["action"], "unchanged");
    let web1 = host(&plan, "web1");
    assert_eq!(web1["action"], "update");
    assert_eq!(web1["activate"], true);
    assert_eq!(web1["diff"]["compared"], true);
    let added = names(&web1["diff"]["added"]);
    for p in ["jq 1.7.1", "git 2.44.0", "curl 8.7.1"] {
        assert!(added.contains(&p.to_owned()), "{p} added: {added:?}");
    }
    assert_eq!(names(&web1["diff"]["removed"]), vec!["htop 3.3.0"]);
    let changed = &web1["diff"]["changed"];
    assert_eq!(changed.as_array().unwrap().len(), 1, "{changed}");
    assert_eq!(changed[0]["name"], "openssl");
    assert_eq!(changed[0]["from"], "3.0.13");
    assert_eq!(changed[0]["to"], "3.0.14");
    assert_eq!(web1["reboot"], false, "same kernel");

    let human = f.fleet(&["plan"]);
    assert!(human.stdout.contains("+ jq 1.7.1"), "{}", human.stdout);
    assert!(human.stdout.contains("- htop 3.3.0"));
    assert!(human.stdout.contains("~ openssl 3.0.13 → 3.0.14"));
    assert!(human
        .stdout
        .contains("Plan: 0 to install, 1 to update, 2 unchanged, 0 errors."));

    // A new kernel asks for a reboot.
    f.set_config(
        "pi1",
        "{ pkgs, ... }: { networking.hostName = \"pi1\"; environment.systemPackages = [ pkgs.htop ]; \
         boot.kernelVersion = \"6.6.31\"; }",
    );
    // An unreachable host is reported; the others are still planned.
    f.tb.stop_sshd("web2").unwrap();
    let run = f.fleet(&["plan", "--json"]);
    run.expect_code(1);
    let plan = run.json();
    let web2 = host(&plan, "web2");
    assert_eq!(web2["action"], "error");
    assert!(
        web2["error"].as_str().unwrap().starts_with("unreachable: "),
        "{web2}"
    );
    assert!(!web2["target"].is_null(), "what is known is kept");
    assert_eq!(host(&plan, "web1")["action"], "update");
    let pi1 = host(&plan, "pi1");
    assert_eq!(pi1["action"], "update");
    assert_eq!(pi1["reboot"], true);
    assert_eq!(
        pi1["reboot_parts"],
        // pi1 is aarch64: its device trees come with the kernel.
        serde_json::json!(["kernel", "initrd", "kernel-modules", "dtbs"])
    );
    f.tb.start_sshd("web2").unwrap();
    for h in ["pi1", "web1", "web2"] {
        let top = f.link(h, "/run/current-system");
        f.assert_sound(h, &[top.as_deref()]);
    }
}

#[test]
fn an_aarch64_host_without_emulation_gets_the_remedies_and_the_others_are_planned() {
    let f = Fleet::start_with(
        Testbed::builder()
            .extra_platforms(None)
            .host(HostSpec::new("pi1").system("aarch64-linux"))
            .host(HostSpec::new("nas")),
    );
    let run = f.fleet(&["plan"]);
    run.expect_code(1);
    for remedy in [
        "boot.binfmt.emulatedSystems = [ \"aarch64-linux\" ]",
        "extra-platforms = aarch64-linux",
        "builders = ssh://",
        "build = \"cross\"",
    ] {
        assert!(run.stdout.contains(remedy), "{remedy} in\n{}", run.stdout);
    }
    assert!(run.stdout.contains("nas  install"), "{}", run.stdout);
    f.assert_sound("pi1", &[None]);
}

#[test]
fn a_saved_plan_is_applied_exactly_and_refused_for_a_host_that_changed_since() {
    let f = Fleet::start([HostSpec::new("a"), HostSpec::new("b")]);
    f.fleet(&["apply"]).expect_code(0);
    let old_a = f.link("a", "/run/current-system").unwrap();
    let old_b = f.link("b", "/run/current-system").unwrap();

    f.set_config("a", &config("a", &["nano"]));
    f.set_config("b", &config("b", &["vim"]));
    let saved = f.dir.join("plan.json");
    f.fleet(&["plan", "--out", saved.to_str().unwrap()])
        .expect_code(0);
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let target_a = host(&plan, "a")["target"].as_str().unwrap().to_owned();

    // fleet.toml moves on after the plan: apply still does what the plan says.
    f.set_config("a", &config("a", &["ripgrep"]));
    // Someone deploys b meanwhile.
    f.set_config("b", &config("b", &["tmux"]));
    f.fleet(&["apply", "--on", "b"]).expect_code(0);
    let now_b = f.link("b", "/run/current-system").unwrap();

    let run = f.fleet(&["apply", "--json", saved.to_str().unwrap()]);
    run.expect_code(3);
    let outcomes = run.outcomes();
    assert_eq!(outcomes["a"], "applied");
    assert_eq!(outcomes["b"], "refused");
    assert!(
        run.stdout.contains("changed since the plan"),
        "{}",
        run.stdout
    );
    assert_eq!(f.link("a", "/run/current-system").unwrap(), target_a);
    f.assert_sound("a", &[Some(&target_a)]);
    f.assert_sound("b", &[Some(&now_b)]);
    assert_ne!(old_a, target_a);
    assert_ne!(old_b, now_b);
}
