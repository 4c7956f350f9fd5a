//! `[secrets.NAME]` end to end (docs/secrets.md): secrets from a file and from a command reach
//! the hosts their selector names with the right owner, group and mode (through sudo on `nas`);
//! a change is uploaded and a removal deletes, also when the system is unchanged; a host whose
//! upload fails is not activated while the others carry on; and the secret's bytes are in no
//! process's argv or environment on either side while the upload runs, nor in any Nix store,
//! output, JSON, plan file, record or sshd log. Every scan has a control proving it finds the
//! bytes where they should be. Every test ends with [`Fleet::assert_sound`].

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use fleet_e2e::scan::scanning;
use fleet_e2e::{config, current, Fleet, HostSpec, Run};

/// Marks unique to this run, so a hit is ours.
fn marker(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("S3CRET-{what}-{}-{nanos}", std::process::id())
}

fn stat(f: &Fleet, host: &str, path: &str) -> String {
    f.sh(
        host,
        &format!("stat -c '%U:%G:%a' {path} 2>/dev/null || echo missing"),
    )
}

/// Runs `fleet ARGS` while sampling every process's argv and environment for the secrets and
/// for two control markers (one in a process of fleet's, one on a host). Returns the run.
fn apply_scanned(f: &Fleet, args: &[&str], secrets: &[&str], hosts: &[&str]) -> Run {
    let netns: BTreeSet<u64> = hosts
        .iter()
        .map(|h| {
            std::fs::metadata(format!("/run/netns/{}", f.tb.host(h).netns))
                .unwrap()
                .ino()
        })
        .collect();
    f.sh(
        hosts[0],
        "FLEET_CONTROL=control-remote-88 setsid sleep 120 >/dev/null 2>&1 </dev/null &",
    );
    let mut needles: Vec<Vec<u8>> = secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
    needles.push(b"control-deployer-88".to_vec());
    needles.push(b"control-remote-88".to_vec());
    let n = needles.len();
    let mut run = f.spawn(args);
    let pid = run.pid();
    let ((), scans, hits) = scanning(needles, pid, netns, Duration::from_millis(10), || {
        fleet_e2e::wait_until("fleet to finish", Duration::from_secs(400), || {
            !run.running()
        })
    });
    let run = run.finish(Duration::from_secs(10));
    eprintln!("{}\n{}", run.stderr, run.stdout);
    assert!(scans >= 10, "{scans} scans");
    assert!(
        hits.iter().any(|(i, _)| *i == n - 2),
        "control: the scanner sees fleet's child processes"
    );
    assert!(
        hits.iter().any(|(i, _)| *i == n - 1),
        "control: the scanner sees processes on the hosts"
    );
    let leaks: Vec<&String> = hits
        .iter()
        .filter(|(i, _)| *i < n - 2)
        .map(|(_, d)| d)
        .collect();
    assert!(
        leaks.is_empty(),
        "a secret is in argv or environ: {leaks:?}"
    );
    for s in secrets {
        assert!(
            !run.stdout.contains(s),
            "a secret is in fleet's stdout (JSON)"
        );
        assert!(!run.stderr.contains(s), "a secret is in fleet's stderr");
    }
    run
}

/// Files under `roots` on `host` that hold `needle`.
fn host_files_with(f: &Fleet, host: &str, roots: &str, needle: &str) -> String {
    f.sh(
        host,
        &format!("grep -rlF -- '{needle}' {roots} 2>/dev/null | sort || true"),
    )
}

/// Files under `root` on the deployer that hold `needle`.
fn local_files_with(root: &Path, needle: &str) -> Vec<String> {
    let out = std::process::Command::new("grep")
        .args(["-rlF", "--", needle])
        .arg(root)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// No secret anywhere it must not be: hosts' stores, logs, records, the deployment package and
/// fleet's state, sshd's log; the deployer's store and the fleet folder (but the source file).
fn assert_nowhere_else(f: &Fleet, hosts: &[&str], secrets: &[&str], allowed_local: &[&Path]) {
    for s in secrets {
        for h in hosts {
            let found = host_files_with(f, h, "/nix /etc/nixos /run/fleet", s);
            assert_eq!(found, "", "{h}: a secret is in {found}");
            let sshd = f.tb.host_dir(h).unwrap().join("sshd.log");
            let log = std::fs::read_to_string(sshd).unwrap_or_default();
            assert!(!log.contains(s), "{h}: sshd logged a secret");
        }
        let store = local_files_with(Path::new("/nix/store"), s);
        assert!(
            store.is_empty(),
            "a secret is in the deployer's store: {store:?}"
        );
        let here: Vec<String> = local_files_with(&f.dir, s)
            .into_iter()
            .filter(|p| !allowed_local.iter().any(|a| Path::new(p) == *a))
            .collect();
        assert!(here.is_empty(), "a secret is in the fleet folder: {here:?}");
    }
}

#[test]
fn secrets_reach_their_hosts_change_are_removed_and_never_leak() {
    let f = Fleet::start([
        HostSpec::new("pi1").system("aarch64-linux").tag("pi"),
        HostSpec::new("nas").sudo_password(),
    ]);
    let (wifi, token, late) = (marker("wifi"), marker("token"), marker("late"));
    std::fs::create_dir_all(f.dir.join("secrets")).unwrap();
    let wifi_file = f.dir.join("secrets/wifi.psk");
    let token_file = f.dir.join("secrets/token.src");
    let late_file = f.dir.join("secrets/late");
    std::fs::write(&wifi_file, format!("{wifi}\n")).unwrap();
    std::fs::write(&token_file, &token).unwrap();
    std::fs::write(&late_file, &late).unwrap();
    f.edit_toml(|t| {
        format!(
            r#"{t}
[secrets.wifi]
source = "secrets/wifi.psk"
hosts = "@pi"

[secrets.token]
command = "cat secrets/token.src; FLEET_CONTROL=control-deployer-88 sleep 1 >/dev/null"
dest = "/run/app/conf/token"
group = "daemon"
mode = "0440"

[secrets.late]
source = "secrets/late"
owner = "nobody"
group = "nogroup"
mode = "0600"
hosts = "nas"
when = "after-activation"
"#
        )
    });
    let all = [wifi.as_str(), token.as_str(), late.as_str()];
    let hosts = ["pi1", "nas"];

    // 1. From nothing: every secret where its selector says, with its owner, group and mode.
    let run = apply_scanned(&f, &["apply", "--json"], &all, &hosts);
    run.expect_code(0);
    for h in hosts {
        assert_eq!(run.outcomes()[h], "applied", "{h}");
    }
    assert_eq!(stat(&f, "pi1", "/run/keys/wifi"), "root:root:400");
    assert_eq!(f.sh("pi1", "cat /run/keys/wifi"), wifi);
    assert_eq!(stat(&f, "nas", "/run/keys/wifi"), "missing", "not selected");
    for h in hosts {
        assert_eq!(stat(&f, h, "/run/app/conf/token"), "root:daemon:440", "{h}");
        assert_eq!(f.sh(h, "cat /run/app/conf/token"), token, "{h}");
        assert_eq!(stat(&f, h, "/run/app/conf"), "root:root:700", "{h}: parent");
        assert_eq!(
            f.sh(
                h,
                "ls -A /run/app/conf /run/keys 2>/dev/null | grep -c fleet-secret || true"
            ),
            "0",
            "{h}: no temporary file left"
        );
    }
    assert_eq!(stat(&f, "nas", "/run/keys/late"), "nobody:nogroup:600");
    assert_eq!(f.sh("nas", "cat /run/keys/late"), late);
    assert_eq!(stat(&f, "pi1", "/run/keys/late"), "missing");
    // Control: the scan finds a secret where it should be.
    assert_eq!(
        host_files_with(&f, "pi1", "/run/keys /nix", &wifi),
        "/run/keys/wifi"
    );
    let manifest = f.sh("nas", "cat /nix/var/fleet/secrets.json");
    assert!(manifest.contains("/run/keys/late") && manifest.contains("\"token\""));
    let plan = f.fleet(&["plan", "--out", "plan.json"]);
    plan.expect_code(0);
    let sources = [
        wifi_file.as_path(),
        token_file.as_path(),
        late_file.as_path(),
    ];
    assert_nowhere_else(&f, &hosts, &all, &sources);
    let systems: Vec<String> = hosts.iter().map(|h| current(&f, h).unwrap()).collect();

    // 2. Systems unchanged; one secret changes, one goes away, one is new: uploaded, deleted,
    //    created.
    let (wifi2, api) = (marker("wifi2"), marker("api"));
    std::fs::write(&wifi_file, &wifi2).unwrap();
    let api_file = f.dir.join("secrets/api.src");
    std::fs::write(&api_file, &api).unwrap();
    f.edit_toml(|t| {
        let start = t.find("[secrets.token]").unwrap();
        let end = t.find("[secrets.late]").unwrap();
        format!(
            "{}{}\n[secrets.api]\ncommand = \"cat secrets/api.src; FLEET_CONTROL=control-deployer-88 sleep 1 >/dev/null\"\nhosts = \"pi1\"\n",
            &t[..start],
            &t[end..]
        )
    });
    // The plan says what would happen, per host, compared on the host; no content, no hash.
    let planned = f.fleet(&["plan", "--json", "--out", "plan2.json"]);
    planned.expect_code(0);
    let plan = planned.json();
    let changes = |host: &str| -> Vec<(String, String)> {
        let h = plan["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == host)
            .unwrap();
        h["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_owned(),
                    s["change"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        changes("pi1"),
        pairs(&[("wifi", "change"), ("api", "create"), ("token", "remove")])
    );
    assert_eq!(
        changes("nas"),
        pairs(&[("late", "unchanged"), ("token", "remove")])
    );
    assert_eq!(
        f.sh("pi1", "cat /run/keys/wifi"),
        wifi,
        "planning changed nothing"
    );
    let text = f.fleet(&["plan"]);
    assert!(
        text.stdout
            .contains("~ secret wifi (/run/keys/wifi, change)"),
        "{}",
        text.stdout
    );
    let run = apply_scanned(&f, &["apply", "--json"], &[&wifi2, &token, &api], &hosts);
    run.expect_code(0);
    assert_eq!(f.sh("pi1", "cat /run/keys/wifi"), wifi2);
    assert_eq!(stat(&f, "pi1", "/run/keys/wifi"), "root:root:400");
    for h in hosts {
        assert_eq!(
            stat(&f, h, "/run/app/conf/token"),
            "missing",
            "{h}: removed"
        );
    }
    assert_eq!(f.sh("nas", "cat /run/keys/late"), late, "kept");
    assert!(run.stdout.contains("secret token: removed"));
    assert!(run.stdout.contains("secret wifi: changed"));
    assert!(run.stdout.contains("secret late: unchanged"));
    assert!(run.stdout.contains("secret api: created"));
    assert_eq!(f.sh("pi1", "cat /run/keys/api"), api);
    assert_eq!(stat(&f, "nas", "/run/keys/api"), "missing");
    assert_nowhere_else(
        &f,
        &hosts,
        &[&wifi2, &token, &api],
        &[
            wifi_file.as_path(),
            token_file.as_path(),
            api_file.as_path(),
        ],
    );
    for (h, s) in hosts.iter().zip(&systems) {
        f.assert_sound(h, &[Some(s)]);
    }
}

#[test]
fn a_host_whose_secret_cannot_be_placed_is_not_activated_and_the_others_carry_on() {
    let f = Fleet::start([
        HostSpec::new("pi1").system("aarch64-linux"),
        HostSpec::new("nas"),
    ]);
    let first = f.fleet(&["apply", "--json"]);
    first.expect_code(0);
    let before: Vec<String> = ["pi1", "nas"]
        .iter()
        .map(|h| current(&f, h).unwrap())
        .collect();
    for h in ["pi1", "nas"] {
        f.set_config(h, &config(h, &["htop", "git"]));
    }
    std::fs::write(f.dir.join("ok.key"), "fine").unwrap();
    f.edit_toml(|t| {
        format!(
            r#"{t}
[secrets.ok]
source = "ok.key"

[secrets.broken]
command = "echo x"
owner = "no-such-user-fleet"
hosts = "pi1"
"#
        )
    });
    let run = f.fleet(&["apply", "--json"]);
    assert_ne!(run.code, Some(0));
    let outcomes = run.outcomes();
    assert_eq!(outcomes["nas"], "applied");
    assert_eq!(outcomes["pi1"], "failed");
    let detail = run.detail("pi1");
    assert!(
        detail.contains("broken") && detail.contains("not activated"),
        "{detail}"
    );
    assert_eq!(current(&f, "pi1").as_deref(), Some(before[0].as_str()));
    assert_ne!(current(&f, "nas").as_deref(), Some(before[1].as_str()));
    assert_eq!(stat(&f, "nas", "/run/keys/ok"), "root:root:400");
    assert_eq!(
        f.sh("pi1", "ls -A /run/keys | grep -c fleet-secret || true"),
        "0",
        "no partial file"
    );
    assert_eq!(stat(&f, "pi1", "/run/keys/broken"), "missing");
    f.assert_sound("pi1", &[Some(&before[0])]);
    let nas_now = current(&f, "nas").unwrap();
    f.assert_sound("nas", &[Some(&nas_now)]);
}

/// Removes a user (and its group) the stand-in's activation created in the machine's
/// /etc/passwd, which every simulated host shares, even if the test fails.
struct UserGuard(String);

impl Drop for UserGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("userdel").arg(&self.0).output();
        let _ = std::process::Command::new("groupdel").arg(&self.0).output();
    }
}

#[test]
fn an_after_activation_secret_can_belong_to_a_user_the_new_system_creates() {
    let f = Fleet::start([HostSpec::new("nas")]);
    let user = format!("fs{}", std::process::id() % 1_000_000);
    let _guard = UserGuard(user.clone());
    let id = |u: &str| {
        f.sh(
            "nas",
            &format!("id -u {u} >/dev/null 2>&1 && echo yes || echo no"),
        )
    };
    assert_eq!(
        id(&user),
        "no",
        "control: the user does not exist before the activation"
    );
    f.set_config(
        "nas",
        &fleet_e2e::config_with(
            "nas",
            &format!("users.users.{user} = {{ isSystemUser = true; }};"),
        ),
    );
    let content = marker("svc");
    std::fs::write(f.dir.join("svc.key"), &content).unwrap();
    f.edit_toml(|t| {
        format!(
            "{t}\n[secrets.svc]\nsource = \"svc.key\"\nowner = \"{user}\"\ngroup = \"{user}\"\nmode = \"0400\"\nwhen = \"after-activation\"\n"
        )
    });
    let run = f.fleet(&["apply", "--json"]);
    run.expect_code(0);
    assert_eq!(run.outcomes()["nas"], "applied");
    assert_eq!(id(&user), "yes", "the activation created the user");
    assert_eq!(
        stat(&f, "nas", "/run/keys/svc"),
        format!("{user}:{user}:400")
    );
    assert_eq!(f.sh("nas", "cat /run/keys/svc"), content);
    let activating = run.stdout.find("\"phase\":\"activating\"").unwrap();
    let placed = run.stdout.find("secret svc: created").unwrap();
    assert!(activating < placed, "placed after the activation");
    let now = current(&f, "nas").unwrap();
    f.assert_sound("nas", &[Some(&now)]);
}

#[test]
fn after_a_reboot_status_shows_missing_secrets_and_push_places_them_without_activating() {
    let f = Fleet::start([HostSpec::new("nas").sudo_password(), HostSpec::new("pi1")]);
    let content = marker("boot");
    std::fs::write(f.dir.join("boot.key"), &content).unwrap();
    f.edit_toml(|t| format!("{t}\n[secrets.boot]\nsource = \"boot.key\"\nmode = \"0440\"\n"));
    f.fleet(&["apply", "--json"]).expect_code(0);
    let status = |f: &Fleet| {
        let run = f.fleet(&["status", "--json", "--no-eval"]);
        run.expect_code(0);
        let v = run.json();
        v.as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["name"].as_str().unwrap().to_owned(),
                    h["missing_secrets"].clone(),
                )
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert!(status(&f).values().all(|m| m.is_null()), "nothing missing");
    let systems: Vec<String> = ["nas", "pi1"]
        .iter()
        .map(|h| current(&f, h).unwrap())
        .collect();

    // /run/keys is a tmpfs: a reboot empties it (and the same mode elsewhere counts as wrong).
    f.sh("nas", "rm -rf /run/keys");
    f.sh("pi1", "chmod 0444 /run/keys/boot");
    let s = status(&f);
    assert_eq!(s["nas"], serde_json::json!(["boot"]));
    assert_eq!(s["pi1"], serde_json::json!(["boot"]));
    let text = f.fleet(&["status", "--no-eval"]);
    assert!(
        text.stdout.contains("nas: secrets missing: boot"),
        "{}",
        text.stdout
    );

    let run = f.fleet(&["secrets", "push", "--on", "nas", "--json"]);
    run.expect_code(0);
    assert_eq!(run.outcomes()["nas"], "pushed");
    assert!(!run.stdout.contains(&content) && !run.stderr.contains(&content));
    assert_eq!(stat(&f, "nas", "/run/keys/boot"), "root:root:440");
    assert_eq!(f.sh("nas", "cat /run/keys/boot"), content);
    let s = status(&f);
    assert!(s["nas"].is_null());
    assert_eq!(
        s["pi1"],
        serde_json::json!(["boot"]),
        "not selected: untouched"
    );
    f.fleet(&["secrets", "push", "--on", "pi1"]).expect_code(0);
    assert_eq!(stat(&f, "pi1", "/run/keys/boot"), "root:root:440");
    for (h, s) in ["nas", "pi1"].iter().zip(&systems) {
        assert_eq!(
            current(&f, h).as_deref(),
            Some(s.as_str()),
            "{h}: not activated"
        );
        f.assert_sound(h, &[Some(s)]);
    }
}
