//! Hosts on other Debian userlands (Nix 2.26 on trixie, Nix 2.34 and OpenSSH 10 on sid) and the
//! deployer's Nix wrappers. The roots are built on first use (cached under
//! `/var/cache/fleet-testbed/roots`); when the Debian registry cannot be reached these tests say
//! so and skip, and only then.

use std::process::{Command, Stdio};
use std::time::Instant;

use fleet_testbed::userland::{ensure_root, nix_wrappers};
use fleet_testbed::{Error, HostSpec, Root, Testbed, Userland};

/// The root, or `None` (printed) when the registry cannot be reached.
fn root(u: Userland) -> Option<Root> {
    let t = Instant::now();
    match ensure_root(u) {
        Ok(r) => {
            let r = r.expect("a root userland");
            eprintln!(
                "{u} root {} ({}) ready in {:.1?}{}",
                r.dir.display(),
                r.nix_version,
                t.elapsed(),
                if r.built_in.is_some() {
                    " (built now)"
                } else {
                    ""
                }
            );
            Some(r)
        }
        Err(e @ Error::RegistryUnreachable { .. }) => {
            eprintln!("SKIPPED ({u}): {e}");
            None
        }
        Err(e) => panic!("{u} root: {e}"),
    }
}

fn stdout(c: &mut Command) -> String {
    let out = c.stdin(Stdio::null()).output().expect("runs");
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn hosts_run_their_userlands_nix_sshd_and_sudo_on_their_own_store() {
    let mut specs = vec![(HostSpec::new("deb12"), "2.8.0", "\t1:9.2p")];
    if root(Userland::Trixie).is_some() {
        specs.push((
            HostSpec::new("trixie").userland(Userland::Trixie),
            "2.26.",
            "\t1:10.0p",
        ));
    }
    if root(Userland::Sid).is_some() {
        specs.push((
            HostSpec::new("sid").userland(Userland::Sid).sudo_password(),
            "2.34.",
            "\t1:10.",
        ));
    }
    let t = Instant::now();
    let tb = Testbed::start(specs.iter().map(|(s, _, _)| s.clone())).unwrap();
    eprintln!("{} hosts up in {:.2?}", specs.len(), t.elapsed());
    for (spec, nix, openssh) in &specs {
        let h = &spec.name;
        assert_eq!(tb.host(h).userland, spec.userland);
        // exec, and an SSH session (through sudo for the sudo host), run the userland's Nix.
        let v = tb.exec_ok(h, "nix-store --version").unwrap();
        assert!(v.contains(nix), "{h}: exec runs {v}");
        let user = tb.host(h).user.clone();
        let remote = if user == "root" {
            "nix-store --version && dpkg-query -W openssh-server && id -u".to_owned()
        } else {
            format!(
                "printf '%s\\n' '{}' | sudo -S -p '' sh -c 'nix-store --version && dpkg-query -W openssh-server && id -u'",
                tb.sudo_password()
            )
        };
        let out = stdout(&mut tb.ssh(h, &user, &remote));
        assert!(out.contains(nix), "{h}: ssh session runs {out}");
        assert!(out.contains(openssh), "{h}: {out}");
        assert!(out.ends_with("\n0"), "{h}: root in the end: {out}");
        // The session's Nix writes the host's private store, not the machine's.
        let p = tb
            .exec_ok(h, &format!("echo {h} > /tmp/fltb-{h}.txt && nix-store --add /tmp/fltb-{h}.txt; rm -f /tmp/fltb-{h}.txt"))
            .unwrap();
        let p = p.trim();
        assert!(p.starts_with("/nix/store/"), "{p}");
        let dir = tb.host_dir(h).unwrap().join("nix");
        assert!(
            dir.join(p.trim_start_matches("/nix/")).exists(),
            "{h}: {p} is in the host's own /nix"
        );
        assert!(
            !std::path::Path::new(p).exists(),
            "not in the machine's store"
        );
        // stop_sshd cuts sessions of any OpenSSH; start_sshd brings it back in the userland.
        let mut session = tb.ssh(h, &user, "sleep 60");
        let mut session = session.stdin(Stdio::null()).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(700));
        tb.stop_sshd(h).unwrap();
        let st = session.wait().unwrap();
        assert!(!st.success(), "{h}: the session was cut");
        assert!(!tb.sshd_running(h).unwrap());
        tb.start_sshd(h).unwrap();
        let out = stdout(&mut tb.ssh(h, &user, &remote));
        assert!(out.contains(nix), "{h} after restart: {out}");
    }
    tb.teardown().unwrap();
}

#[test]
fn deployer_wrappers_run_the_roots_nix_on_the_machines_store() {
    let Some(root) = root(Userland::Sid) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    nix_wrappers(&root, &bin, &[]).unwrap();
    let v = stdout(
        Command::new(bin.join("nix-store"))
            .current_dir(tmp.path())
            .arg("--version"),
    );
    assert!(v.contains("2.34."), "{v}");
    // Same store: a path added by the root's Nix is valid for the machine's Nix, and the other
    // way round; the working directory is kept.
    std::fs::write(tmp.path().join("a.txt"), "from 2.34\n").unwrap();
    let p = stdout(
        Command::new(bin.join("nix-store"))
            .current_dir(tmp.path())
            .args(["--add", "a.txt"]),
    );
    assert!(p.starts_with("/nix/store/"), "{p}");
    stdout(Command::new("nix-store").args(["--verify-path", &p]));
    let hash = stdout(Command::new("nix-store").args(["-q", "--hash", &p]));
    let hash2 = stdout(
        Command::new(bin.join("nix-store"))
            .current_dir(tmp.path())
            .args(["-q", "--hash", &p]),
    );
    assert_eq!(hash, hash2);
    // A directory that is not shared is refused with the reason.
    let elsewhere = tempfile::tempdir_in("/var/tmp").unwrap();
    let out = Command::new(bin.join("nix-store"))
        .current_dir(elsewhere.path())
        .arg("--version")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not visible"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
