//! The simulated fleet against real sshd, sudo and Nix. Needs root and namespaces; never skipped:
//! on a machine without them these tests fail with the reason.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fleet_testbed::{instance, HostSpec, Testbed};

fn check(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ssh(tb: &Testbed, host: &str, user: &str, remote: &str) -> Output {
    tb.ssh(host, user, remote)
        .stdin(Stdio::null())
        .output()
        .expect("running ssh")
}

/// Builds a toy derivation on the deployer; returns its store path.
fn build_toy(tb: &Testbed, name: &str, bytes: usize) -> String {
    let expr = format!(
        r#"derivation {{
  name = "{name}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  PATH = "/usr/bin:/bin";
  args = [ "-c" "mkdir $out && echo {name} > $out/hello && head -c {bytes} /dev/urandom > $out/blob" ];
}}"#
    );
    let out = Command::new("nix-build")
        .args(["--no-out-link", "-E", &expr])
        .envs(tb.nix_env())
        .output()
        .expect("running nix-build");
    check("nix-build", &out).trim().to_owned()
}

fn copy_closure(tb: &Testbed, host: &str, path: &str) -> Duration {
    let started = Instant::now();
    let out = Command::new("nix-copy-closure")
        .arg("--to")
        .arg(tb.host(host).ssh_target())
        .arg(path)
        .envs(tb.nix_env())
        .env("NIX_SSHOPTS", tb.nix_sshopts())
        .output()
        .expect("running nix-copy-closure");
    check("nix-copy-closure", &out);
    started.elapsed()
}

#[test]
fn three_hosts_reachable_with_private_stores_and_a_copied_closure() {
    let started = Instant::now();
    let tb = Testbed::start([
        HostSpec::new("pi1").system("aarch64-linux"),
        HostSpec::new("pi2").system("aarch64-linux"),
        HostSpec::new("nas").sudo_password(),
    ])
    .expect("starting 3 hosts");
    eprintln!(
        "started 3 hosts (instance {}) in {:.2?} (sshd ready after {:.2?})",
        tb.instance(),
        started.elapsed(),
        tb.timings().sshd_ready
    );

    for h in tb.hosts() {
        // Root with the key, host key checked strictly against the testbed's known_hosts.
        let out = ssh(&tb, &h.name, "root", "id -u; cat /proc/self/mountinfo");
        let text = check(&format!("ssh root@{}", h.name), &out);
        assert!(text.starts_with("0\n"), "{text}");
        assert!(
            text.contains(&format!(
                "/fleet-testbed-{}/{}/nix /nix ",
                tb.instance(),
                h.name
            )),
            "sshd sessions see the host's own /nix:\n{text}"
        );
        // The sudo user with the same key; sudo wants the password and accepts it on stdin.
        let pw = tb.sudo_password();
        let out = ssh(
            &tb,
            &h.name,
            tb.sudo_user(),
            &format!("id -un; printf '%s\\n' '{pw}' | sudo -S -p '' sh -c 'id -u; ls -A /nix'"),
        );
        let text = check(&format!("sudo on {}", h.name), &out);
        assert_eq!(text.lines().next(), Some(tb.sudo_user()));
        assert_eq!(text.lines().nth(1), Some("0"), "{text}");
        let out = ssh(
            &tb,
            &h.name,
            tb.sudo_user(),
            "echo wrong | sudo -S -p '' true",
        );
        assert!(!out.status.success(), "sudo accepted a wrong password");
        let out = ssh(&tb, &h.name, tb.sudo_user(), "sudo -n true");
        assert!(!out.status.success(), "sudo ran without a password");
        // Empty store, private /etc/nixos, /boot and /run.
        let store = tb
            .exec_ok(&h.name, "ls -A /nix; ls -A /nix/store 2>/dev/null || true")
            .unwrap();
        assert_eq!(store, "", "host {} has a non-empty /nix", h.name);
        let rest = tb
            .exec_ok(
                &h.name,
                "ls -A /etc/nixos /boot; ls /run/current-system 2>&1 || true",
            )
            .unwrap();
        assert_eq!(
            rest,
            "/boot:\n\n/etc/nixos:\nls: cannot access '/run/current-system': No such file or directory\n",
            "host {} is not fresh",
            h.name
        );
        assert_eq!(
            h.host_key_line,
            fs::read_to_string(
                tb.host_dir(&h.name)
                    .unwrap()
                    .join("ssh/ssh_host_ed25519_key.pub")
            )
            .unwrap()
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
        );
    }
    tb.exec_ok("pi1", "echo '{ }' > /etc/nixos/configuration.nix")
        .unwrap();
    assert!(
        !Path::new("/etc/nixos/configuration.nix").exists() || {
            // the deployer might have one of its own; it must not be ours
            fs::read_to_string("/etc/nixos/configuration.nix").unwrap() != "{ }\n"
        }
    );
    assert_eq!(tb.exec_ok("pi2", "ls -A /etc/nixos").unwrap(), "");

    // A path built on the deployer is not valid on a host until copied.
    let toy = build_toy(&tb, &format!("fleet-testbed-toy-{}", tb.instance()), 1000);
    for h in tb.hosts() {
        let out = tb
            .exec(&h.name, &format!("nix-store --verify-path {toy}"))
            .unwrap();
        assert!(
            !out.status.success(),
            "{toy} valid on {} before copy",
            h.name
        );
    }
    let took = copy_closure(&tb, "pi1", &toy);
    eprintln!("nix-copy-closure of a toy path took {took:.2?}");
    tb.exec_ok(
        "pi1",
        &format!("nix-store --verify-path {toy} && nix-store --check-validity {toy}"),
    )
    .expect("copied path is valid on pi1");
    assert_eq!(
        tb.exec_ok("pi1", &format!("cat {toy}/hello"))
            .unwrap()
            .trim(),
        format!("fleet-testbed-toy-{}", tb.instance())
    );
    let out = tb
        .exec("pi2", &format!("nix-store --verify-path {toy}"))
        .unwrap();
    assert!(!out.status.success(), "pi2 shares pi1's store");
    // And the sudo user's root commands see the same private store.
    let out = ssh(
        &tb,
        "pi1",
        tb.sudo_user(),
        &format!(
            "printf '%s\\n' '{}' | sudo -S -p '' nix-store --verify-path {toy}",
            tb.sudo_password()
        ),
    );
    check("sudo nix-store --verify-path on pi1", &out);

    let t = Instant::now();
    tb.teardown().expect("teardown");
    eprintln!("teardown of 3 hosts took {:.2?}", t.elapsed());
}

#[test]
fn teardown_leaves_nothing_behind() {
    let tb =
        Testbed::start([HostSpec::new("a"), HostSpec::new("b").sudo_password()]).expect("starting");
    let n = tb.instance();
    let state = tb.state_dir().to_path_buf();
    // A session that is still open when the testbed goes away.
    let mut session = tb
        .ssh("a", "root", "sleep 600")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mut pids = Vec::new();
    for h in tb.hosts() {
        let out = Command::new("ip")
            .args(["netns", "pids", &h.netns])
            .output()
            .unwrap();
        pids.extend(
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned),
        );
    }
    assert!(
        pids.len() >= 5,
        "holder + sshd per host, one session: {pids:?}"
    );
    assert!(!instance::leftovers(n).is_empty());
    tb.teardown().expect("teardown");

    let netns = String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        !netns.contains(&format!("flt{n}-")),
        "namespaces left: {netns}"
    );
    let links = String::from_utf8(
        Command::new("ip")
            .args(["-o", "link", "show"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        !links.contains(&format!("fltbr{n}:")),
        "bridge left: {links}"
    );
    assert!(!links.contains(&format!("flt{n}h")), "veth left: {links}");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&state.display().to_string()),
        "mounts left: {mounts}"
    );
    assert!(!state.exists(), "state dir left");
    for pid in &pids {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        assert!(
            status.is_empty() || status.contains("State:\tZ"),
            "process {pid} survived teardown: {status}"
        );
    }
    assert!(instance::leftovers(n).is_empty());
    assert!(!Path::new(&format!("{}/{n}.lock", instance::LOCK_DIR)).exists());
    let _ = session.wait();

    // Dropping without teardown cleans up too.
    let tb = Testbed::start([HostSpec::new("c")]).expect("starting");
    let n = tb.instance();
    drop(tb);
    assert!(
        instance::leftovers(n).is_empty(),
        "{:?}",
        instance::leftovers(n)
    );
}

#[test]
fn concurrent_testbeds_do_not_collide() {
    let a = std::thread::spawn(|| Testbed::start([HostSpec::new("x")]).expect("a"));
    let b = Testbed::start([HostSpec::new("x")]).expect("b");
    let a = a.join().unwrap();
    assert_ne!(a.instance(), b.instance());
    assert_ne!(a.host("x").address, b.host("x").address);
    check("ssh a", &ssh(&a, "x", "root", "true"));
    check("ssh b", &ssh(&b, "x", "root", "true"));
    a.teardown().unwrap();
    b.teardown().unwrap();
}

#[test]
fn sshd_stops_and_starts_and_a_rate_limited_link_is_slower() {
    let tb = Testbed::start([HostSpec::new("fast"), HostSpec::new("slow").rate_mbit(20)])
        .expect("starting");

    tb.stop_sshd("fast").unwrap();
    assert!(!tb.sshd_running("fast").unwrap());
    let out = ssh(&tb, "fast", "root", "true");
    assert!(!out.status.success(), "ssh worked with sshd stopped");
    // The host itself is still there.
    tb.exec_ok("fast", "test -d /run/sshd").unwrap();
    tb.start_sshd("fast").unwrap();
    assert!(tb.sshd_running("fast").unwrap());
    check("ssh after restart", &ssh(&tb, "fast", "root", "true"));

    // 4 MB deployer → host: ~1.6 s at 20 Mbit/s, much less unthrottled.
    let blob = tb.state_dir().join("blob");
    fs::write(&blob, vec![7u8; 4 << 20]).unwrap();
    let time = |host: &str| {
        let started = Instant::now();
        let out = tb
            .ssh(host, "root", "cat > /dev/null")
            .stdin(fs::File::open(&blob).unwrap())
            .output()
            .unwrap();
        check("upload", &out);
        started.elapsed()
    };
    let fast = time("fast");
    let slow = time("slow");
    eprintln!("4 MiB over ssh: unthrottled {fast:.2?}, 20 Mbit/s {slow:.2?}");
    assert!(slow > fast, "rate limit had no effect");
    assert!(
        slow > Duration::from_millis(800),
        "4 MiB at 20 Mbit/s in {slow:.2?}"
    );
    tb.teardown().unwrap();
}

#[test]
fn a_small_tmpfs_store_can_be_filled() {
    let tb = Testbed::start([HostSpec::new("tiny").nix_tmpfs_mb(8), HostSpec::new("big")])
        .expect("starting");
    assert!(
        tb.fill_disk("big").is_err(),
        "filling a disk-backed /nix must be refused"
    );
    tb.fill_disk("tiny").unwrap();
    let out = tb.exec("tiny", "echo x > /nix/one-more").unwrap();
    assert!(!out.status.success(), "write succeeded on a full /nix");
    tb.free_disk("tiny").unwrap();
    tb.exec_ok("tiny", "echo x > /nix/one-more").unwrap();
    tb.teardown().unwrap();
}
