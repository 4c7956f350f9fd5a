//! Scaling out on Nix (docs/scale.md): a simulated host as the remote builder of an aarch64
//! host while the deployer has no aarch64 platform; hosts with `substitute = true` that fetch
//! from a signed binary cache on the test bridge, the deployer sending only the rest; and a
//! cache that fails or is down, where fleet falls back to copying everything.

use std::time::Instant;

use fleet_e2e::{config_with, current, named, planned_target, Fleet, HostSpec};
use fleet_testbed::{BinaryCache, CacheMode, Testbed};

/// NAR bytes the copy sent to `host`: the last progress event of an `apply --json` run.
fn bytes_sent(events: &[serde_json::Value], host: &str) -> u64 {
    events
        .iter()
        .filter(|e| e["host"] == host && e["done_bytes"].is_u64())
        .filter_map(|e| e["done_bytes"].as_u64())
        .next_back()
        .unwrap_or(0)
}

/// fleet's remarks about `host` in an `apply --json` run.
fn remarks(events: &[serde_json::Value], host: &str) -> String {
    events
        .iter()
        .filter(|e| e["host"] == host && e["stream"] == "fleet")
        .filter_map(|e| e["line"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A system of `name` with 16 MiB of blobs (the bulk a cache can hold) from blob set `seed`.
fn heavy(name: &str, seed: &str) -> String {
    config_with(
        name,
        &format!(
            "environment.systemPackages = [ pkgs.htop ];\n  fleet.bench = {{ paths = 16; totalMB = 16; seed = \"{seed}\"; }};"
        ),
    )
}

/// web1 substitutes from the cache (its nix.conf trusts it), web2 is a plain host.
fn substituting_fleet(seed: &str) -> (Fleet, BinaryCache) {
    let f = Fleet::start([
        HostSpec::new("web1").nix_conf("substituters =\n"),
        HostSpec::new("web2").nix_conf("substituters =\n"),
    ]);
    let cache = f.tb.start_binary_cache().expect("cache starts");
    f.tb.set_nix_conf("web1", &cache.nix_conf()).unwrap();
    f.tb.set_nix_conf("web2", &cache.nix_conf()).unwrap();
    for h in ["web1", "web2"] {
        f.set_config(h, &heavy(h, seed));
    }
    f.edit_toml(|t| t.replace("[hosts.web1]\n", "[hosts.web1]\nsubstitute = true\n"));
    (f, cache)
}

/// Builds web1's system and pushes its closure to the cache (`fleet build --to`), as CI would;
/// the deployment package (fleet.toml's files, the pin's source) stays out of it.
fn fill_cache(f: &Fleet, cache: &BinaryCache) -> String {
    let run = f.fleet(&["build", "--on", "web1", "--to", &cache.store_url()]);
    run.expect_code(0);
    let toplevel = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("web1\t"))
        .expect("web1's system on stdout")
        .to_owned();
    assert!(toplevel.starts_with("/nix/store/"), "{}", run.stdout);
    toplevel
}

#[test]
fn an_aarch64_host_builds_on_a_remote_builder_when_the_deployer_has_no_aarch64() {
    let started = Instant::now();
    // The deployer's NIX_CONFIG has no extra-platforms; the builder's own nix.conf has it.
    let f = Fleet::start_with(
        Testbed::builder()
            .host(HostSpec::new("pi1").system("aarch64-linux"))
            .host(
                HostSpec::new("builder")
                    .nix_conf("substituters =\nsandbox = false\nextra-platforms = aarch64-linux\n"),
            )
            .extra_platforms(None),
    );
    // A system no earlier run built (the deployer's store is shared): it must be built now.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    f.set_config(
        "pi1",
        &config_with(
            "pi1",
            &format!("environment.etc.\"nonce\".text = \"{nonce}\";"),
        ),
    );
    // Without a builder, the plan-time check refuses pi1 and says how to fix it.
    let plan = f.fleet(&["plan", "--on", "pi1"]);
    assert_ne!(plan.code, Some(0), "{}", plan.stderr);
    assert!(
        plan.stderr.contains("no remote builder offers it")
            || plan.stdout.contains("no remote builder offers it"),
        "{}{}",
        plan.stderr,
        plan.stdout
    );

    let line = f.tb.builder_line("builder", "aarch64-linux");
    f.edit_toml(|t| {
        format!(
            "[build]\nbuilders = [{}]\n\n{t}",
            fleet_testbed::toml_str(&line)
        )
    });
    let plan = f.fleet(&["plan", "--on", "pi1"]);
    plan.expect_code(0);
    let builder_addr = f.tb.host("builder").address.to_string();
    assert!(
        plan.stderr.contains(&format!(
            "pi1 (aarch64-linux) builds on remote builder ssh-ng://root@{builder_addr}"
        )),
        "the check names the builder:\n{}",
        plan.stderr
    );
    let run = f.fleet(&["apply", "--yes", "--json", "--on", "pi1"]);
    run.expect_code(0);
    assert_eq!(run.outcomes()["pi1"], "applied");
    // The system was built on the builder (it is in the builder's store) and runs on pi1.
    let target = planned_target(&run.json_lines(), "pi1");
    assert!(
        f.store_paths("builder").contains(&target),
        "{target} was not built on the builder"
    );
    assert_eq!(current(&f, "pi1").as_deref(), Some(target.as_str()));
    f.assert_sound("pi1", &[Some(&target)]);
    eprintln!("remote builder test: {:.1?}", started.elapsed());
}

#[test]
fn a_substituting_host_fetches_from_the_lan_cache_and_the_deployer_sends_only_the_rest() {
    let started = Instant::now();
    let (f, cache) = substituting_fleet("subst");
    let toplevel = fill_cache(&f, &cache);

    // The plan shows the split for web1, a plain copy for web2.
    let plan = f.fleet(&["plan"]);
    plan.expect_code(0);
    let text = format!("{}{}", plan.stdout, plan.stderr);
    let web1 = text
        .lines()
        .find(|l| l.contains("web1"))
        .unwrap_or_default();
    assert!(
        web1.contains("substitute") && web1.contains(", copy "),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("web2") && l.contains("copy") && !l.contains("substitute")),
        "{text}"
    );
    let json = f.fleet(&["plan", "--json"]).expect_code(0).json();
    let copy = &named(&json, "web1")["copy"];
    let (missing, offered) = (
        copy["paths"].as_array().unwrap().len(),
        copy["substitute"]["paths"].as_array().unwrap().len(),
    );
    assert!(offered > 0 && offered < missing, "{copy}");

    let run = f.fleet(&["apply", "--yes", "--json"]);
    run.expect_code(0);
    assert_eq!(run.outcomes()["web1"], "applied");
    assert_eq!(run.outcomes()["web2"], "applied");
    let events = run.json_lines();
    let (sent1, sent2) = (bytes_sent(&events, "web1"), bytes_sent(&events, "web2"));
    eprintln!(
        "bytes sent by the deployer: web1 (substitute) {sent1}, web2 (plain) {sent2} ({:.1} %); cache served {} NAR bytes",
        100.0 * sent1 as f64 / sent2.max(1) as f64,
        cache.nar_bytes_served()
    );
    assert!(sent2 > 16 * 1024 * 1024, "the plain copy sent {sent2}");
    assert!(
        sent1 * 20 <= sent2,
        "web1 got {sent1} bytes from the deployer, more than 5 % of a plain copy ({sent2})"
    );
    assert!(cache.nar_bytes_served() > 8 * 1024 * 1024);
    assert!(
        remarks(&events, "web1").contains("from the host's substituters"),
        "{}",
        remarks(&events, "web1")
    );
    // web1 runs the system, its store is sound (the substituted paths are registered).
    assert_eq!(current(&f, "web1").as_deref(), Some(toplevel.as_str()));
    f.assert_sound("web1", &[Some(&toplevel)]);
    f.assert_store_clean("web1");
    eprintln!("substitution test: {:.1?}", started.elapsed());
}

#[test]
fn a_failing_or_down_cache_falls_back_to_copying() {
    let started = Instant::now();
    let (f, cache) = substituting_fleet("fail");
    f.edit_toml(|t| t.replace("[hosts.web2]", "[hosts.web2]\nsubstitute = true"));
    fill_cache(&f, &cache);

    // The cache has the paths at plan time but fails every download: both hosts get all
    // they lack from the deployer, and the deploy succeeds.
    cache.set_mode(CacheMode::NarsFail);
    let run = f.fleet(&["apply", "--yes", "--json", "--on", "web1"]);
    run.expect_code(0);
    assert_eq!(run.outcomes()["web1"], "applied");
    let events = run.json_lines();
    let plan = events.iter().find(|e| e["type"] == "plan").expect("plan");
    let planned = &named(&plan["plan"], "web1")["copy"];
    assert!(
        !planned["substitute"]["paths"]
            .as_array()
            .unwrap()
            .is_empty(),
        "the cache offered the paths: {planned}"
    );
    assert!(
        bytes_sent(&events, "web1") >= planned["bytes"].as_u64().unwrap() * 9 / 10,
        "web1 was sent {} of {}",
        bytes_sent(&events, "web1"),
        planned["bytes"]
    );
    assert!(
        remarks(&events, "web1").contains("substituted 0 path(s)"),
        "{}",
        remarks(&events, "web1")
    );
    f.assert_store_clean("web1");

    // A cache that is down: the plan offers nothing to substitute and the copy does it all.
    cache.set_mode(CacheMode::Down);
    let run = f.fleet(&["apply", "--yes", "--json", "--on", "web2"]);
    run.expect_code(0);
    assert_eq!(run.outcomes()["web2"], "applied");
    let events = run.json_lines();
    let plan = events.iter().find(|e| e["type"] == "plan").expect("plan");
    let planned = &named(&plan["plan"], "web2")["copy"];
    // Either the host said its cache has nothing, or it could not ask (a plain copy).
    assert!(
        planned["substitute"]["paths"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "{planned}"
    );
    assert!(bytes_sent(&events, "web2") >= planned["bytes"].as_u64().unwrap() * 9 / 10);
    f.assert_store_clean("web2");
    eprintln!("fallback test: {:.1?}", started.elapsed());
}
