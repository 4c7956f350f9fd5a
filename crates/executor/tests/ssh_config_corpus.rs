//! fleet's ssh_config resolution checked against OpenSSH itself: every fixture in
//! `tests/fixtures/ssh_config/*.conf` is resolved for the host names in its `# hosts:` line by
//! `fleet_executor::ssh::config` and by `ssh -G -F FILE HOST` (the machine's OpenSSH, then
//! the testbed userland roots' OpenSSH via `chroot`, where present). Compared: hostname, user,
//! port, identityfile list (as written) and proxyjump (as hops); with the machine's `ssh -v` also the
//! identity file paths after expansion. `ssh` needs no network for this.

use std::path::{Path, PathBuf};
use std::process::Command;

use fleet_executor::ssh::config::{parse_proxy_jump, HostQuery, HostSettings, JumpHost, SshConfig};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ssh_config");
const ROOTS: &str = "/var/cache/fleet-testbed/roots";

/// What `ssh -G` prints for the compared keywords.
#[derive(Debug, Default, PartialEq, Eq)]
struct Resolved {
    hostname: String,
    user: String,
    port: String,
    identity_files: Vec<String>,
    /// Parsed into hops: `ssh -G` prints the last hop normalised (no `ssh://`).
    proxy_jump: Option<Result<Vec<JumpHost>, String>>,
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Copies the fixtures to `dest`, replacing `@DIR@` with `dir_as_seen` (the path `ssh` sees).
fn copy_fixtures(from: &Path, dest: &Path, dir_as_seen: &str) {
    std::fs::create_dir_all(dest).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let to = dest.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_fixtures(&e.path(), &to, dir_as_seen);
        } else {
            let text = std::fs::read_to_string(e.path()).unwrap();
            std::fs::write(&to, text.replace("@DIR@", dir_as_seen)).unwrap();
        }
    }
}

/// `(file name, hosts)` for each top-level fixture.
fn fixtures() -> Vec<(String, Vec<String>)> {
    let mut v: Vec<_> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let hosts = text
                .lines()
                .find_map(|l| l.strip_prefix("# hosts:"))
                .unwrap_or_else(|| panic!("{} has no `# hosts:` line", p.display()))
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            (p.file_name().unwrap().to_str().unwrap().to_owned(), hosts)
        })
        .collect();
    v.sort();
    assert!(v.len() >= 5, "fixtures missing: {v:?}");
    v
}

fn ssh_g(chroot: Option<&str>, file: &str, host: &str) -> Resolved {
    let mut cmd = match chroot {
        Some(root) => {
            let mut c = Command::new("chroot");
            c.arg(root).arg("ssh");
            c
        }
        None => Command::new("ssh"),
    };
    let out = cmd
        .args(["-G", "-F", file, host])
        .output()
        .expect("run ssh -G");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ssh -G -F {file} {host} ({chroot:?}) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut r = Resolved::default();
    for line in stdout.lines() {
        let Some((k, v)) = line.split_once(' ') else {
            continue;
        };
        match k {
            "hostname" => r.hostname = v.to_owned(),
            "user" => r.user = v.to_owned(),
            "port" => r.port = v.to_owned(),
            "identityfile" => r.identity_files.push(v.to_owned()),
            "proxyjump" => r.proxy_jump = Some(parse_proxy_jump(v)),
            _ => {}
        }
    }
    r
}

/// The identity files `ssh` would load, expanded, from `ssh -v` with a proxy command that
/// closes at once (no network).
fn ssh_v_identities(file: &str, host: &str) -> Vec<String> {
    let out = Command::new("timeout")
        .args(["20", "ssh", "-v", "-F", file])
        .args(["-o", "ProxyJump=none", "-o", "ProxyCommand=exec true"])
        .args(["-o", "BatchMode=yes", host, "true"])
        .output()
        .expect("run ssh -v");
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("debug1: identity file "))
        .filter_map(|l| l.rsplit_once(" type ").map(|(f, _)| f.to_owned()))
        .filter(|f| !f.ends_with("-cert"))
        .collect()
}

/// fleet's answer in `ssh -G` terms, with OpenSSH's defaults where nothing is set.
fn fleet_as_ssh_g(s: &HostSettings, host: &str, user: &str, ssh_g: &Resolved) -> Resolved {
    let identity_files = if s.identity_files_as_written.is_empty() {
        // Nothing set: OpenSSH lists its built-in defaults; fleet uses its own defaults
        // (ConnectOptions::default_identity_files). Check that ssh shows only defaults.
        assert!(
            ssh_g
                .identity_files
                .iter()
                .all(|f| f.starts_with("~/.ssh/id_")),
            "ssh -G has identity files where fleet has none: {:?}",
            ssh_g.identity_files
        );
        ssh_g.identity_files.clone()
    } else {
        s.identity_files_as_written.clone()
    };
    Resolved {
        hostname: s
            .host_name
            .clone()
            .unwrap_or_else(|| host.to_ascii_lowercase()),
        user: s.user.clone().unwrap_or_else(|| user.to_owned()),
        port: s.port.unwrap_or(22).to_string(),
        identity_files,
        proxy_jump: s.proxy_jump.as_deref().map(parse_proxy_jump),
    }
}

#[test]
fn ssh_config_corpus_matches_openssh() {
    let user = sh("id -un");
    let home = PathBuf::from(sh("getent passwd $(id -u) | cut -d: -f6"));
    assert!(
        Command::new("ssh").arg("-V").output().is_ok(),
        "OpenSSH's `ssh` is needed"
    );
    let dir = tempfile::tempdir().unwrap();
    copy_fixtures(
        Path::new(FIXTURES),
        dir.path(),
        dir.path().to_str().unwrap(),
    );

    // Other OpenSSH versions: the testbed's userland roots, if built, through chroot.
    let mut chroots = Vec::new();
    for name in ["sid", "trixie"] {
        let root = Path::new(ROOTS).join(name);
        if !root.join("usr/bin/ssh").exists() {
            eprintln!(
                "skipping OpenSSH of {}: no usr/bin/ssh there (root not built, or no client)",
                root.display()
            );
            continue;
        }
        let inside = format!("/tmp/fleet-ssh-config-corpus-{}", std::process::id());
        let outside = root.join(inside.trim_start_matches('/'));
        copy_fixtures(Path::new(FIXTURES), &outside, &inside);
        chroots.push((root.display().to_string(), inside, outside));
    }

    let mut failures = Vec::new();
    let mut compared = 0;
    for (fixture, hosts) in fixtures() {
        let file = dir.path().join(&fixture);
        let file_s = file.to_str().unwrap();
        let cfg = SshConfig::load(&file, &home).unwrap_or_else(|e| panic!("{e}"));
        for host in &hosts {
            let q = HostQuery {
                host,
                local_user: &user,
                home: &home,
            };
            let s = cfg.host(&q).unwrap_or_else(|e| panic!("{e}"));
            let mut check = |who: &str, theirs: Resolved| {
                let ours = fleet_as_ssh_g(&s, host, &user, &theirs);
                compared += 1;
                if ours != theirs {
                    failures.push(format!(
                        "{fixture} {host}: {who} says\n  {theirs:?}\nfleet says\n  {ours:?}"
                    ));
                }
            };
            check("ssh -G", ssh_g(None, file_s, host));
            for (root, inside, _) in &chroots {
                let f = format!("{inside}/{fixture}");
                check(&format!("{root} ssh -G"), ssh_g(Some(root), &f, host));
            }
            if !s.identity_files.is_empty() {
                let theirs = ssh_v_identities(file_s, host);
                let ours: Vec<String> = s
                    .identity_files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                compared += 1;
                if ours != theirs {
                    failures.push(format!(
                        "{fixture} {host}: expanded identity files: ssh -v {theirs:?}, fleet {ours:?}"
                    ));
                }
            }
        }
    }
    for (_, _, outside) in &chroots {
        let _ = std::fs::remove_dir_all(outside);
    }
    eprintln!(
        "compared {compared} resolutions against OpenSSH ({} other version(s))",
        chroots.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
