//! The sudo password never leaks into argv/env; 30 hosts at once; binary-clean fast `spawn`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fleet_executor::*;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every process's argv and environment, searched for `needle`. Returns offenders.
fn scan_proc(needle: &[u8]) -> Vec<String> {
    let mut bad = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        for file in ["cmdline", "environ"] {
            if let Ok(bytes) = std::fs::read(format!("/proc/{name}/{file}")) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    let cmd = std::fs::read(format!("/proc/{name}/cmdline")).unwrap_or_default();
                    bad.push(format!(
                        "pid {name} {file}: {}",
                        String::from_utf8_lossy(&cmd).replace('\0', " ")
                    ));
                }
            }
        }
    }
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sudo_password_never_in_argv_or_environment() {
    ensure_sudo_user();
    let hosts: Vec<Sshd> = (0..2).map(|_| Sshd::start()).collect();
    let tmp = tempfile::tempdir().unwrap();
    let c = connector(tmp.path());
    let source = Arc::new(SudoPasswordSource::command(format!(
        "cat {}",
        // The password reaches fleet the way CI would give it: a command's stdout.
        {
            let f = tmp.path().join("pw");
            std::fs::write(&f, format!("{SUDO_PASSWORD}\n")).unwrap();
            f.display().to_string()
        }
    )));
    let privilege = Privilege::Password(source.clone());
    assert!(!format!("{privilege:?}").contains(SUDO_PASSWORD));

    // Control: the scanner does see a password put in argv or env.
    let mut control = std::process::Command::new("sleep")
        .arg("5")
        .env("CONTROL_SECRET", "fleet-control-secret-42")
        .spawn()
        .unwrap();
    // Right after the fork the child still shows its parent's environment until its exec:
    // scan until the exec is visible (or give up after 5 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let seen = loop {
        let seen = scan_proc(b"fleet-control-secret-42");
        if !seen.is_empty() || std::time::Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    control.kill().unwrap();
    control.wait().unwrap();
    assert!(!seen.is_empty(), "the scanner works");

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let scanner = std::thread::spawn(move || {
        let mut scans = 0;
        let mut found = vec![];
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            found.extend(scan_proc(SUDO_PASSWORD.as_bytes()));
            scans += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        (scans, found)
    });

    let mut tasks = vec![];
    for (i, h) in hosts.iter().enumerate() {
        let conn = c
            .connect(&h.target(&format!("h{i}"), SUDO_USER))
            .await
            .unwrap();
        let p = privilege.clone();
        tasks.push(tokio::spawn(async move {
            // Long enough for many scans while sudo and the payload run.
            conn.exec("sleep 2; id -u", &p, Stdin::None).await.unwrap()
        }));
    }
    for t in tasks {
        let out = t.await.unwrap();
        assert_eq!(out.stdout_lossy(), "0\n", "{out:?}");
        assert!(!out.stderr_lossy().contains(SUDO_PASSWORD));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (scans, found) = scanner.join().unwrap();
    println!("scanned /proc/*/{{cmdline,environ}} {scans} times");
    assert!(scans >= 10);
    assert!(found.is_empty(), "password visible: {found:#?}");
    assert_eq!(source.times_asked(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_hosts_in_parallel() {
    ensure_sudo_user();
    let t0 = Instant::now();
    let hosts: Vec<Sshd> = (0..30).map(|_| Sshd::start()).collect();
    println!("started 30 sshd instances in {:?}", t0.elapsed());
    let tmp = tempfile::tempdir().unwrap();
    let c = connector(tmp.path());
    let targets: Vec<(String, SshTarget)> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            (
                format!("host{i:02}"),
                h.target(&format!("host{i:02}"), SUDO_USER),
            )
        })
        .collect();
    let t = Instant::now();
    let out = run_hosts(
        targets,
        30,
        CancellationToken::new(),
        EventSink::discard(),
        move |ctx| {
            let c = c.clone();
            async move {
                let conn = match c.connect(&ctx.host).await {
                    Ok(c) => c,
                    Err(e) => return HostOutcome::failed(&e),
                };
                match conn.exec("uname -n", &Privilege::None, Stdin::None).await {
                    Ok(o) if o.success() => HostOutcome::Ok,
                    Ok(o) => HostOutcome::Failed {
                        error: format!("{o:?}"),
                    },
                    Err(e) => HostOutcome::failed(&e),
                }
            }
        },
    )
    .await;
    let took = t.elapsed();
    println!("30 hosts (30 local sshd instances, user {SUDO_USER}): connect + auth + command in {took:?}");
    for (h, o) in &out {
        assert_eq!(o, &HostOutcome::Ok, "{h}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_is_binary_clean_and_fast() {
    let sshd = Sshd::start();
    let tmp = tempfile::tempdir().unwrap();
    let c = connector(tmp.path());
    ensure_sudo_user();
    let conn = c.connect(&sshd.target("bin", SUDO_USER)).await.unwrap();

    let mut data = vec![0u8; 16 << 20];
    rand::fill(&mut data[..]);
    let want = Sha256::digest(&data);

    let p = conn.spawn("cat", &Privilege::None).await.unwrap();
    let (mut stdout, mut stdin, exit) = p.into_parts();
    let t = Instant::now();
    let data = Arc::new(data);
    let d2 = data.clone();
    let writer = tokio::spawn(async move {
        for chunk in d2.chunks(64 << 10) {
            stdin.write_all(chunk).await.unwrap();
        }
        stdin.shutdown().await.unwrap();
    });
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0usize;
    loop {
        let k = stdout.read(&mut buf).await.unwrap();
        if k == 0 {
            break;
        }
        hasher.update(&buf[..k]);
        n += k;
    }
    writer.await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    let info = exit.finish().await.unwrap();
    assert!(info.success(), "{info:?}");
    assert_eq!(n, data.len());
    assert_eq!(hasher.finalize(), want, "sha256 differs");
    println!(
        "16 MiB random through remote `cat` (both directions over one channel): {:.3} s, {:.1} MiB/s ({} build)",
        secs,
        16.0 / secs,
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
}

/// Throughput per direction (not part of the default run: `--ignored`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn spawn_throughput_by_direction() {
    ensure_sudo_user();
    let sshd = Sshd::start();
    let tmp = tempfile::tempdir().unwrap();
    let c = connector(tmp.path());
    let conn = c.connect(&sshd.target("bin", SUDO_USER)).await.unwrap();
    let mb = 128usize;
    // Remote → local.
    let p = conn
        .spawn(&format!("head -c {}M /dev/zero", mb), &Privilege::None)
        .await
        .unwrap();
    let (mut stdout, _stdin, exit) = p.into_parts();
    let t = Instant::now();
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0;
    loop {
        let k = stdout.read(&mut buf).await.unwrap();
        if k == 0 {
            break;
        }
        n += k;
    }
    let s = t.elapsed().as_secs_f64();
    exit.finish().await.unwrap();
    assert_eq!(n, mb << 20);
    println!("remote→local {mb} MiB: {:.1} MiB/s", mb as f64 / s);
    // Local → remote.
    let p = conn
        .spawn("cat > /dev/null", &Privilege::None)
        .await
        .unwrap();
    let (_stdout, mut stdin, exit) = p.into_parts();
    let chunk = vec![0u8; 256 << 10];
    let t = Instant::now();
    for _ in 0..(mb * 4) {
        stdin.write_all(&chunk).await.unwrap();
    }
    stdin.shutdown().await.unwrap();
    exit.finish().await.unwrap();
    let s = t.elapsed().as_secs_f64();
    println!("local→remote {mb} MiB: {:.1} MiB/s", mb as f64 / s);
}
