//! Attacks and bad input against `fleet apply`: host keys that do not match or are unknown, the
//! sudo password's exposure, shell metacharacters in paths and values, bad host names, a remote
//! that answers the store protocol with nonsense. Every test ends with [`Fleet::assert_sound`]
//! on every host. docs/reliability.md lists what each test proves.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fleet_e2e::{config, Fleet, HostSpec};
use fleet_testbed::toml_str;

fn current(f: &Fleet, host: &str) -> Option<String> {
    f.link(host, "/run/current-system")
}

/// `SHA256:...` of an OpenSSH public key line, as `ssh-keygen -l` prints it.
fn fingerprint(key_line: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("key.pub");
    std::fs::write(&file, format!("{key_line}\n")).unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("bits, fingerprint, comment")
        .to_owned()
}

#[test]
fn a_pinned_host_key_that_does_not_match_is_refused_with_both_fingerprints() {
    let f = Fleet::start([HostSpec::new("pinned"), HostSpec::new("other")]);
    let real = f.tb.host("pinned").host_key_line.clone();
    let wrong = f.tb.host("other").host_key_line.clone();
    // `pinned` is pinned to `other`'s key: a machine-in-the-middle as far as fleet can tell.
    f.edit_toml(|t| {
        t.replacen(
            &format!("host-key = \"{real}\""),
            &format!("host-key = \"{wrong}\""),
            1,
        )
    });

    let run = f.fleet(&["apply", "--json"]);
    run.expect_code(1);
    assert_eq!(run.outcomes()["pinned"], "failed");
    assert_eq!(run.outcomes()["other"], "applied");
    let why = run.detail("pinned");
    for fp in [fingerprint(&real), fingerprint(&wrong)] {
        assert!(why.contains(&fp), "the error shows {fp}: {why}");
    }
    // Refused before authenticating: nothing ran on the host.
    assert!(f.store_paths("pinned").is_empty());
    f.assert_sound("pinned", &[None]);
    let other = current(&f, "other").unwrap();
    f.assert_sound("other", &[Some(&other)]);
}

#[test]
fn an_unknown_host_key_is_refused_unless_accepted_which_records_it_and_a_changed_one_never() {
    let f = Fleet::start([HostSpec::new("new1"), HostSpec::new("new2")]);
    // No pins, and a known_hosts file that knows nobody.
    let known = f.dir.join("known_hosts");
    std::fs::write(&known, "").unwrap();
    let testbed_known = f.tb.known_hosts_path().display().to_string();
    f.edit_toml(|t| {
        t.lines()
            .filter(|l| !l.starts_with("host-key"))
            .map(|l| {
                if l.starts_with("known-hosts") {
                    format!("known-hosts = {}", toml_str(&known.display().to_string()))
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    assert!(!std::fs::read_to_string(f.toml_path())
        .unwrap()
        .contains(&testbed_known));

    let run = f.fleet(&["apply", "--json"]);
    run.expect_code(1);
    for h in ["new1", "new2"] {
        assert_eq!(run.outcomes()[h], "failed");
        let why = run.detail(h);
        let line = &f.tb.host(h).host_key_line;
        let pin: Vec<&str> = line.split_whitespace().take(2).collect();
        assert!(
            why.contains(&format!("host-key = \"{}\"", pin.join(" "))),
            "{h}: the error gives the line to pin: {why}"
        );
        let fp = fingerprint(line);
        assert!(why.contains(&fp), "{h}: the error shows {fp}: {why}");
        assert!(
            why.contains("accept-new-host-keys"),
            "{h}: the error says how to trust it: {why}"
        );
        assert!(f.store_paths(h).is_empty(), "{h}: nothing ran");
        f.assert_sound(h, &[None]);
    }
    assert_eq!(
        std::fs::read_to_string(&known).unwrap(),
        "",
        "nothing recorded"
    );

    // Accepted: recorded, and used from then on.
    let run = f.fleet(&["apply", "--json", "--accept-new-host-keys"]);
    run.expect_code(0);
    let recorded = std::fs::read_to_string(&known).unwrap();
    for h in ["new1", "new2"] {
        assert_eq!(run.outcomes()[h], "applied");
        let sim = f.tb.host(h);
        let key_b64 = sim.host_key_line.split_whitespace().nth(1).unwrap();
        assert!(
            run.stderr
                .lines()
                .any(|l| l.starts_with(&format!("fleet: {h}: recorded"))
                    && l.contains(&format!("host-key = \"ssh-ed25519 {key_b64}\""))),
            "{h}: fleet says what it recorded and how to pin it:\n{}",
            run.stderr
        );
        assert!(
            recorded
                .lines()
                .any(|l| l.contains(&sim.address.to_string()) && l.contains(key_b64)),
            "{h}'s key is in known_hosts:\n{recorded}"
        );
    }
    let run = f.fleet(&["apply", "--json"]);
    run.expect_code(0);
    let systems: Vec<String> = ["new1", "new2"]
        .iter()
        .map(|h| {
            assert_eq!(run.outcomes()[*h], "unchanged");
            current(&f, h).unwrap()
        })
        .collect();

    // `new1` now shows another key than the one recorded: refused even with the flag.
    let new1_b64 =
        f.tb.host("new1")
            .host_key_line
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned();
    let new2_b64 =
        f.tb.host("new2")
            .host_key_line
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned();
    let tampered: String = recorded
        .lines()
        .map(|l| {
            if l.contains(&new1_b64) {
                l.replace(&new1_b64, &new2_b64)
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    std::fs::write(&known, &tampered).unwrap();
    f.set_config("new1", &config("new1", &["htop", "jq"]));
    let run = f.fleet(&["apply", "--json", "--accept-new-host-keys"]);
    run.expect_code(1);
    assert_eq!(run.outcomes()["new1"], "failed");
    assert_eq!(run.outcomes()["new2"], "unchanged");
    let why = run.detail("new1");
    assert!(
        why.contains(&fingerprint(&f.tb.host("new1").host_key_line)),
        "the changed key's fingerprint is shown: {why}"
    );
    assert_eq!(
        std::fs::read_to_string(&known).unwrap(),
        tampered,
        "a changed key is never recorded"
    );
    f.assert_sound("new1", &[Some(&systems[0])]);
    f.assert_sound("new2", &[Some(&systems[1])]);
}

/// The network namespace of a process (`net:[inode]`'s inode), if readable.
fn netns_of(pid: u32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    let s = link.to_string_lossy();
    s.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: comm may hold spaces and parentheses.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    for _ in 0..64 {
        if pid == ancestor {
            return true;
        }
        match parent_of(pid) {
            Some(p) if p > 1 => pid = p,
            _ => return false,
        }
    }
    false
}

/// Processes of this test's run (descendants of `fleet`, or anything in one of the hosts'
/// network namespaces: sshd sessions, sudo, the remote commands) whose argv or environment
/// holds `needle`.
fn scan_proc(needle: &[u8], fleet_pid: u32, host_netns: &BTreeSet<u64>) -> Vec<String> {
    let mut bad = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let ours = descends_from(pid, fleet_pid)
            || netns_of(pid).is_some_and(|ns| host_netns.contains(&ns));
        if !ours {
            continue;
        }
        for file in ["cmdline", "environ"] {
            if let Ok(bytes) = std::fs::read(format!("/proc/{pid}/{file}")) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    bad.push(format!(
                        "pid {pid} {file}: {}",
                        String::from_utf8_lossy(&cmd).replace('\0', " ")
                    ));
                }
            }
        }
    }
    bad
}

#[test]
fn the_sudo_password_is_in_no_argv_environment_output_or_log() {
    let mut f = Fleet::start([
        HostSpec::new("nas").sudo_password(),
        HostSpec::new("pi").sudo_password(),
    ]);
    let password = f.tb.sudo_password().to_owned();
    let netns: BTreeSet<u64> = ["nas", "pi"]
        .iter()
        .map(|h| {
            std::fs::metadata(format!("/run/netns/{}", f.tb.host(h).netns))
                .unwrap()
                .ino()
        })
        .collect();
    // The password comes from a file, through a command (as in CI); the command also runs a
    // control process that carries a marker in its environment for a second.
    let pw_file = f.dir.join("pw");
    std::fs::write(&pw_file, format!("{password}\n")).unwrap();
    let asked = f.dir.join("asked");
    f.env = vec![(
        "FLEET_SUDO_PASSWORD_COMMAND".into(),
        format!(
            "echo asked >> '{}'; cat '{}'; FLEET_CONTROL=control-deployer-77 sleep 1 >/dev/null",
            asked.display(),
            pw_file.display()
        ),
    )];
    // Control on the remote side: a process in `nas` with a marker in its environment.
    f.sh(
        "nas",
        "FLEET_CONTROL=control-remote-77 setsid sleep 600 >/dev/null 2>&1 </dev/null &",
    );

    // With every debug log on (`-vv`): they must not hold the password either.
    let mut run = f.spawn(&["apply", "--json", "-vv"]);
    let fleet_pid = run.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let scanner = {
        let (stop, password, netns) = (stop.clone(), password.clone(), netns.clone());
        std::thread::spawn(move || {
            let (mut scans, mut found) = (0, vec![]);
            let (mut saw_local, mut saw_remote) = (false, false);
            while !stop.load(Ordering::SeqCst) {
                found.extend(scan_proc(password.as_bytes(), fleet_pid, &netns));
                saw_local |= !scan_proc(b"control-deployer-77", fleet_pid, &netns).is_empty();
                saw_remote |= !scan_proc(b"control-remote-77", fleet_pid, &netns).is_empty();
                scans += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (scans, found, saw_local, saw_remote)
        })
    };
    fleet_e2e::wait_until("fleet to finish", Duration::from_secs(300), || {
        !run.running()
    });
    stop.store(true, Ordering::SeqCst);
    let (scans, found, saw_local, saw_remote) = scanner.join().unwrap();
    let run = run.finish(Duration::from_secs(10));
    run.expect_code(0);
    eprintln!("scanned /proc/*/{{cmdline,environ}} {scans} times during the run");
    assert!(saw_local, "the scanner sees fleet's own child processes");
    assert!(saw_remote, "the scanner sees processes on the hosts");
    assert!(scans >= 10, "{scans} scans");
    assert!(found.is_empty(), "the password is visible: {found:#?}");
    assert_eq!(
        std::fs::read_to_string(&asked).unwrap().lines().count(),
        1,
        "asked once for both hosts"
    );
    for (what, text) in [("stdout (JSON)", &run.stdout), ("stderr", &run.stderr)] {
        assert!(
            !text.contains(&password),
            "the password is in fleet's {what}"
        );
    }
    for logged in [
        "ssh: authenticated",
        "ssh: running",
        "running a Nix command",
        "running the activation helper",
    ] {
        assert!(run.stderr.contains(logged), "-vv logs {logged:?}");
    }
    for h in ["nas", "pi"] {
        assert_eq!(run.outcomes()[h], "applied");
        // What fleet leaves on the host: activation logs, the record, sshd's log.
        let leaks = f.sh(
            h,
            &format!(
                "grep -rl -- '{password}' /run/fleet /etc/nixos /nix/var/log 2>/dev/null || true"
            ),
        );
        assert_eq!(leaks, "", "{h}: the password is in {leaks}");
        let sshd_log =
            std::fs::read_to_string(f.tb.host_dir(h).unwrap().join("sshd.log")).unwrap_or_default();
        assert!(
            !sshd_log.contains(&password),
            "{h}: sshd logged the password"
        );
        let now = current(&f, h).unwrap();
        f.assert_sound(h, &[Some(&now)]);
    }
}

#[test]
fn shell_metacharacters_in_paths_names_and_values_are_data_not_code() {
    let f = Fleet::start([
        HostSpec::new("odd"),
        HostSpec::new("oddsudo").sudo_password(),
    ]);
    let marks = tempfile::Builder::new()
        .prefix("fleet-pwned-")
        .tempdir_in("/tmp")
        .unwrap();
    let m = marks.path().display().to_string();
    // The configuration in a folder (and a file) whose names try command substitution, Nix
    // antiquotation, quotes and `;`. A slash cannot be in a name: the markers go to `$HOME`.
    let dir = f.dir.join(
        "my hosts; cd; touch pwned-1; $(cd; touch pwned-2) `cd; touch pwned-3` 'q' \"dq\" ${builtins.abort \"nix-injected\"}",
    );
    std::fs::create_dir_all(&dir).unwrap();
    let file_name = "conf $(cd; touch pwned-4);'x'.nix";
    for h in ["odd", "oddsudo"] {
        let text = format!(
            r#"{{ pkgs, ... }}: {{
  networking.hostName = "{h}; touch {m}/pwned-5 $(touch {m}/pwned-6)";
  environment.systemPackages = [ pkgs.htop ];
  environment.etc."a b; touch {m}/pwned-7 $(touch {m}/pwned-8) `touch {m}/pwned-9` 'q'".text =
    "x'y\"z $(touch {m}/pwned-10) `touch {m}/pwned-11` \${{HOME}}\n";
}}
"#
        );
        let sub = dir.join(h);
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(file_name), text).unwrap();
    }
    f.edit_toml(|t| {
        let mut out = String::new();
        let mut host = None;
        for l in t.lines() {
            if let Some(h) = l.strip_prefix("[hosts.").and_then(|r| r.strip_suffix(']')) {
                host = Some(h.to_owned());
            }
            match (&host, l.starts_with("config = ")) {
                (Some(h), true) => {
                    let path = dir.join(h).join(file_name).display().to_string();
                    out.push_str(&format!("config = {}\n", toml_str(&path)));
                }
                _ => {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    });
    // The deployment record carries `$USER` to the host as an argument of a remote command.
    // It breaks out of single quotes, double quotes and bare words alike.
    let user = format!(
        "o'brien; touch {m}/pwned-12; '$(touch {m}/pwned-13)\"; touch {m}/pwned-14; \"`touch {m}/pwned-15`"
    );

    // Control: the markers do fire when a shell is given these strings as code.
    let dir_name = dir.file_name().unwrap().to_string_lossy().into_owned();
    for code in [
        format!("true {user}"),
        format!("true '{user}'"),
        format!("true \"{user}\""),
        format!("true {dir_name}"),
    ] {
        let _ = std::process::Command::new("sh")
            .arg("-c")
            .arg(&code)
            .env("HOME", &f.home)
            .current_dir(marks.path())
            .output()
            .unwrap();
    }
    let fired = find_named(&[marks.path().to_owned(), f.home.clone()], "pwned-");
    assert!(fired.len() >= 7, "the control fires: {fired:?}");
    for p in fired {
        std::fs::remove_file(p).unwrap();
    }
    let run = {
        let mut c = f.command(&["apply", "--json"]);
        c.env("USER", &user);
        let out = c.output().unwrap();
        fleet_e2e::Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took: Duration::ZERO,
        }
    };
    run.expect_code(0);
    for h in ["odd", "oddsudo"] {
        assert_eq!(run.outcomes()[h], "applied");
        // Everything arrived as data: the etc file with its name and text, the record's `by`.
        let etc = f.sh(
            h,
            &format!(
                "cat \"/run/current-system/etc/a b; touch {m}/pwned-7 \\$(touch {m}/pwned-8) \\`touch {m}/pwned-9\\` 'q'\""
            ),
        );
        assert_eq!(
            etc,
            format!("x'y\"z $(touch {m}/pwned-10) `touch {m}/pwned-11` ${{HOME}}")
        );
        let record: serde_json::Value =
            serde_json::from_str(&f.sh(h, "cat /nix/var/fleet/records/*.json")).unwrap();
        assert!(
            record["by"].as_str().unwrap().starts_with(&user),
            "the record holds $USER verbatim: {}",
            record["by"]
        );
        // config/ mirrors the folders; configuration.nix links to the file, name and all.
        let link = f.sh(
            h,
            "readlink /etc/nixos/current-configuration/configuration.nix",
        );
        assert!(
            link.starts_with("config/") && link.ends_with(&format!("/{h}/{file_name}")),
            "the configuration file is in the deployment package: {link}"
        );
        assert!(f
            .sh(h, "cat /etc/nixos/current-configuration/configuration.nix")
            .contains("networking.hostName"));
        let now = current(&f, h).unwrap();
        f.assert_sound(h, &[Some(&now)]);
    }
    // No marker anywhere: in the marker folder, the deployer's and the hosts' home folders,
    // the fleet folder.
    let mut places = vec![marks.path().to_owned(), f.home.clone(), f.dir.clone()];
    for h in ["odd", "oddsudo"] {
        let d = f.tb.host_dir(h).unwrap();
        places.push(d.to_owned());
    }
    let found = find_named(&places, "pwned-");
    assert!(found.is_empty(), "a command ran: {found:?}");
}

/// Files under `roots` whose name starts with `prefix` (not following symlinks).
fn find_named(roots: &[std::path::PathBuf], prefix: &str) -> Vec<String> {
    fn walk(p: &Path, prefix: &str, out: &mut Vec<String>, depth: usize) {
        if depth > 12 {
            return;
        }
        let Ok(rd) = std::fs::read_dir(p) else { return };
        for e in rd.flatten() {
            let path = e.path();
            if e.file_name().to_string_lossy().starts_with(prefix) {
                out.push(path.display().to_string());
            }
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            // Skip the hosts' stores: large and not where a shell would write.
            if is_dir && e.file_name() != "nix" {
                walk(&path, prefix, out, depth + 1);
            }
        }
    }
    let mut out = Vec::new();
    for r in roots {
        walk(r, prefix, &mut out, 0);
    }
    out
}

#[test]
fn bad_host_names_addresses_and_garbage_fleet_toml_are_refused_before_anything_runs() {
    let f = Fleet::start([HostSpec::new("good")]);
    let base = std::fs::read_to_string(f.toml_path()).unwrap();
    let config = f
        .dir
        .join("hosts/good/configuration.nix")
        .display()
        .to_string();
    for (bad, says) in [
        (
            "[hosts.\"pi;touch-x\"]\nsystem = \"x86_64-linux\"\n",
            "DNS label",
        ),
        ("[hosts.\"a b\"]\nsystem = \"x86_64-linux\"\n", "DNS label"),
        (
            "[hosts.\"$(reboot)\"]\nsystem = \"x86_64-linux\"\n",
            "DNS label",
        ),
        (
            "[hosts.evil]\nsystem = \"x86_64-linux\"\naddress = \"10.0.0.1 -oProxyCommand=sh\"\n",
            "address",
        ),
    ] {
        let text = format!("{base}\n{bad}config = {}\n", toml_str(&config));
        std::fs::write(f.toml_path(), &text).unwrap();
        let run = f.fleet(&["apply", "--json"]);
        run.expect_code(2);
        assert!(
            run.stderr.contains(says),
            "the error explains the rule ({says}):\n{}",
            run.stderr
        );
        assert_eq!(run.stdout, "", "nothing was planned");
    }
    // Not TOML, not even UTF-8: an error, never a panic (the parser itself is fuzzed by
    // crates/inventory/tests/never_panics.rs).
    for garbage in [
        &b"\xff\xfe\x00[hosts.\x80]\n"[..],
        &b"[hosts.a]\nsystem = \"x86_64-linux\"\nconfig = \"\\u0000\"\n[[[\n"[..],
    ] {
        std::fs::write(f.toml_path(), garbage).unwrap();
        let run = f.fleet(&["apply", "--json"]);
        run.expect_code(2);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
    std::fs::write(f.toml_path(), &base).unwrap();
    // A selector naming no host is refused too, not tried.
    let run = f.fleet(&["apply", "--on", "good;reboot"]);
    run.expect_code(2);
    assert!(
        f.store_paths("good").is_empty(),
        "nothing ran on the good host"
    );
    f.assert_sound("good", &[None]);
}

/// A remote `nix-store --serve` that answers with a valid handshake and then claims a set of
/// 2^60 paths: the host fails with a clean error, fleet does not try to allocate it, the others
/// are applied. (crates/store/tests/fake_remote.rs covers the protocol edge cases one by one.)
#[test]
fn a_store_that_answers_with_huge_lengths_gets_a_clean_error() {
    let f = Fleet::start([HostSpec::new("liar"), HostSpec::new("honest")]);
    // Inside `liar` only (its private mount namespace), `nix-store --serve` is the liar; every
    // other use of nix, including the checks below, reaches the real binary.
    f.sh(
        "liar",
        r#"set -e
mkdir -p /nix/.fake
touch /nix/.fake/real-nix
mount --bind "$(readlink -f /usr/bin/nix)" /nix/.fake/real-nix
for n in nix nix-store nix-env nix-build nix-instantiate nix-collect-garbage; do
  ln -sfn real-nix /nix/.fake/$n
done
cat > /nix/.fake/fake <<'EOF'
#!/bin/sh
name=${0##*/}
if [ "$name" = nix-store ] && [ "${1-}" = --serve ]; then
  head -c 8 >/dev/null
  printf '\313\356\122\124\0\0\0\0\006\002\0\0\0\0\0\0'
  printf '\001\0\0\0\0\0\0\0\0\0\0\0\0\0\0\020'
  exec sleep 30
fi
exec /nix/.fake/"$name" "$@"
EOF
chmod +x /nix/.fake/fake
mount --bind /nix/.fake/fake "$(readlink -f /usr/bin/nix)"
"#,
    );
    let run = f.fleet(&["apply", "--json"]);
    run.expect_code(1);
    assert_eq!(run.outcomes()["liar"], "failed");
    assert_eq!(run.outcomes()["honest"], "applied");
    let why = run.detail("liar");
    assert!(why.contains("over the limit"), "a clean error: {why}");
    f.assert_sound("liar", &[None]);
    let honest = current(&f, "honest").unwrap();
    f.assert_sound("honest", &[Some(&honest)]);
}
