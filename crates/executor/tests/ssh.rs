//! The executor against real local sshd instances (see `common`).

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use fleet_executor::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn password_source(password: &str, counter: Arc<AtomicUsize>) -> Arc<SudoPasswordSource> {
    let password = password.to_owned();
    Arc::new(SudoPasswordSource::prompt(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        let p = password.clone();
        Box::pin(async move { Ok(SudoPassword::new(p)) })
    }))
}

#[tokio::test]
async fn key_auth_as_root_and_sudo_user_exec_basics() {
    ensure_sudo_user();
    let sshd = Sshd::start();
    let tmp = tempfile::tempdir().unwrap();
    let c = connector(tmp.path());

    let root = c.connect(&sshd.target("h1", "root")).await.unwrap();
    let out = root
        .exec("id -un", &Privilege::None, Stdin::None)
        .await
        .unwrap();
    assert_eq!(out.stdout_lossy(), "root\n");

    let user = c.connect(&sshd.target("h1", SUDO_USER)).await.unwrap();
    let out = user
        .exec("id -un", &Privilege::None, Stdin::None)
        .await
        .unwrap();
    assert_eq!(out.stdout_lossy(), "fleetsudo\n", "{:?}", sshd.log());

    // stdout, stderr, status.
    let out = root
        .exec(
            "echo out; echo err >&2; exit 3",
            &Privilege::None,
            Stdin::None,
        )
        .await
        .unwrap();
    // (root's ~/.bashrc on this machine may add its own noise on stderr)
    assert_eq!(
        (out.stdout_lossy().as_str(), out.status),
        ("out\n", Some(3))
    );
    assert!(out.stderr_lossy().ends_with("err\n"), "{out:?}");
    // A signal.
    let out = root
        .exec("kill -TERM $$", &Privilege::None, Stdin::None)
        .await
        .unwrap();
    assert_eq!((out.status, out.signal.as_deref()), (None, Some("TERM")));
    // stdin streamed, quoting of a nasty argument.
    let nasty = "it's a \"test\" $(rm -rf /) \n;`x`";
    let out = root
        .exec(
            &format!("printf '%s' {}; wc -c", quote(nasty)),
            &Privilege::None,
            Stdin::Bytes(Bytes::from(vec![7u8; 300_000])),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout_lossy(), format!("{nasty}300000\n"));
    // stdin from an AsyncRead.
    let reader = std::io::Cursor::new(vec![b'x'; 1_000_001]);
    let out = root
        .exec("wc -c", &Privilege::None, Stdin::Reader(Box::new(reader)))
        .await
        .unwrap();
    assert_eq!(out.stdout_lossy(), "1000001\n");
    // Passwordless sudo as root works; many channels at once on one connection. A barrier, not
    // a clock: each channel waits until all 8 have started, which serial channels never do
    // (they would give up after 60 s and print nothing).
    let barrier = format!("/tmp/fleet-ssh-barrier-{}", std::process::id());
    std::fs::create_dir_all(&barrier).unwrap();
    let root = Arc::new(root);
    let mut tasks = vec![];
    for i in 0..8 {
        let r = root.clone();
        let b = barrier.clone();
        tasks.push(tokio::spawn(async move {
            r.exec(
                &format!(
                    "touch {b}/{i}; n=0; while [ $(ls {b} | wc -l) -lt 8 ] && [ $n -lt 600 ]; do \
                     sleep 0.1; n=$((n+1)); done; [ $(ls {b} | wc -l) -ge 8 ] && echo {i}"
                ),
                &Privilege::Passwordless,
                Stdin::None,
            )
            .await
            .unwrap()
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(
            task.await.unwrap().stdout_lossy(),
            format!("{i}\n"),
            "channels ran concurrently"
        );
    }
    let _ = std::fs::remove_dir_all(&barrier);
}

#[tokio::test]
async fn sudo_password_on_three_hosts_asked_once() {
    ensure_sudo_user();
    let hosts: Vec<Sshd> = (0..3).map(|_| Sshd::start()).collect();
    let tmp = tempfile::tempdir().unwrap();
    let c = connector(tmp.path());
    let asked = Arc::new(AtomicUsize::new(0));
    let privilege = Privilege::Password(password_source(SUDO_PASSWORD, asked.clone()));

    let targets: Vec<_> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (format!("h{i}"), h.target(&format!("h{i}"), SUDO_USER)))
        .collect();
    let c2 = c.clone();
    let p2 = privilege.clone();
    let out = run_hosts(
        targets,
        3,
        CancellationToken::new(),
        EventSink::discard(),
        move |ctx| {
            let (c, p) = (c2.clone(), p2.clone());
            async move {
                let conn = match c.connect(&ctx.host).await {
                    Ok(c) => c,
                    Err(e) => return HostOutcome::failed(&e),
                };
                // stdin after the password must reach the command intact.
                let o = conn
                    .exec(
                        "id -u; cat",
                        &p,
                        Stdin::Bytes(Bytes::from_static(b"payload\nline2\n")),
                    )
                    .await;
                match o {
                    Ok(o) if o.success() && o.stdout == b"0\npayload\nline2\n" => HostOutcome::Ok,
                    Ok(o) => HostOutcome::Failed {
                        error: format!("{o:?}"),
                    },
                    Err(e) => HostOutcome::failed(&e),
                }
            }
        },
    )
    .await;
    for (h, o) in &out {
        assert_eq!(o, &HostOutcome::Ok, "{h}");
    }
    assert_eq!(
        asked.load(Ordering::SeqCst),
        1,
        "password asked once for 3 hosts"
    );

    // spawn under sudo: the binary stream starts exactly after FLEET-OK.
    let conn = c.connect(&hosts[0].target("h0", SUDO_USER)).await.unwrap();
    // The payload's own stderr may contain sudo's words; only sudo's are acted on.
    let o = conn
        .exec(
            "echo 'Sorry, try again FLEET-SUDO: FLEET-OK' >&2; echo fine",
            &privilege,
            Stdin::None,
        )
        .await
        .unwrap();
    assert_eq!(o.stdout_lossy(), "fine\n");
    assert_eq!(o.stderr_lossy(), "Sorry, try again FLEET-SUDO: FLEET-OK\n");
    let p = conn.spawn("cat", &privilege).await.unwrap();
    let data: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
    let d2 = data.clone();
    let (mut stdout, mut stdin, exit) = p.into_parts();
    let w = tokio::spawn(async move {
        stdin.write_all(&d2).await.unwrap();
        stdin.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    stdout.read_to_end(&mut got).await.unwrap();
    w.await.unwrap();
    assert_eq!(got, data);
    let info = exit.finish().await.unwrap();
    assert!(info.success(), "{info:?}");
    assert_eq!(asked.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn wrong_sudo_password_fails_once_per_host() {
    ensure_sudo_user();
    let hosts: Vec<Sshd> = (0..2).map(|_| Sshd::start()).collect();
    let tmp = tempfile::tempdir().unwrap();
    let c = connector(tmp.path());
    let asked = Arc::new(AtomicUsize::new(0));
    let privilege = Privilege::Password(password_source("not-the-password", asked.clone()));
    for (i, h) in hosts.iter().enumerate() {
        let conn = c
            .connect(&h.target(&format!("h{i}"), SUDO_USER))
            .await
            .unwrap();
        let t = Instant::now();
        let err = conn
            .exec("echo should-not-run", &privilege, Stdin::None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ExecError::WrongSudoPassword { .. }),
            "{err:?}"
        );
        // sudo's own retry delay is ~2 s; we never wait for a second attempt.
        assert!(t.elapsed() < Duration::from_secs(10));
        // The connection stays usable.
        let o = conn
            .exec("echo still-here", &Privilege::None, Stdin::None)
            .await
            .unwrap();
        assert_eq!(o.stdout_lossy(), "still-here\n");
    }
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    // The account is not locked: the right password still works.
    let good = Privilege::Password(password_source(
        SUDO_PASSWORD,
        Arc::new(AtomicUsize::new(0)),
    ));
    let conn = c.connect(&hosts[0].target("h0", SUDO_USER)).await.unwrap();
    let o = conn.exec("id -u", &good, Stdin::None).await.unwrap();
    assert_eq!(o.stdout_lossy(), "0\n");

    // Passwordless (`sudo -n`) for a user that needs a password: a clean failure, no prompt.
    let o = conn
        .exec("id -u", &Privilege::Passwordless, Stdin::None)
        .await
        .unwrap();
    assert_eq!(o.status, Some(1));
    assert!(o.stderr_lossy().contains("password is required"), "{o:?}");
}

#[tokio::test]
async fn pinned_key_mismatch_is_refused_with_fingerprint() {
    let sshd = Sshd::start();
    let other = Sshd::start();
    let tmp = tempfile::tempdir().unwrap();
    let c = connector(tmp.path());
    let mut t = sshd.target("pinned", "root");
    t.host_key = Some(other.host_key.clone());
    let err = c.connect(&t).await.unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(
        matches!(err, ConnectError::HostKey(HostKeyError::PinMismatch { .. })),
        "{err:?}"
    );
    assert!(msg.contains("SHA256:"), "{msg}");
    // The right pin connects.
    t.host_key = Some(sshd.host_key.clone());
    c.connect(&t).await.unwrap();
    // Garbage pin is a clear error.
    t.host_key = Some("ssh-ed25519 notbase64!".into());
    assert!(matches!(
        c.connect(&t).await.unwrap_err(),
        ConnectError::HostKey(HostKeyError::InvalidPin { .. })
    ));
}

#[tokio::test]
async fn unknown_key_refused_unless_accept_new_which_records_it() {
    let sshd = Sshd::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut t = sshd.target("kh", "root");
    t.host_key = None;
    let kh = tmp.path().join("known_hosts");

    let strict = connector(tmp.path());
    let err = strict.connect(&t).await.unwrap_err();
    println!("{err}");
    assert!(
        matches!(err, ConnectError::HostKey(HostKeyError::Unknown { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("SHA256:"));
    assert!(!kh.exists() || std::fs::read_to_string(&kh).unwrap().is_empty());

    let mut o = options(tmp.path());
    o.accept_new_host_keys = true;
    let accepting = Connector::new(o, Arc::new(NoPassphrase)).unwrap();
    accepting.connect(&t).await.unwrap();
    let recorded = std::fs::read_to_string(&kh).unwrap();
    assert!(
        recorded
            .trim_start()
            .starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", sshd.port)),
        "{recorded}"
    );
    // Now known: the strict connector connects.
    strict.connect(&t).await.unwrap();

    // A changed key (another sshd on the same host:port entry) is refused even with accept-new.
    let other = Sshd::start();
    let forged = format!("[127.0.0.1]:{} {}\n", other.port, sshd.host_key);
    std::fs::write(&kh, forged).unwrap();
    let mut t2 = other.target("kh2", "root");
    t2.host_key = None;
    let err = accepting.connect(&t2).await.unwrap_err();
    println!("{err}");
    assert!(
        matches!(err, ConnectError::HostKey(HostKeyError::Changed { .. })),
        "{err:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&kh).unwrap().lines().count(),
        1,
        "nothing learned"
    );
}

#[tokio::test]
async fn a_down_host_fails_while_others_succeed() {
    let up: Vec<Sshd> = (0..2).map(|_| Sshd::start()).collect();
    let down_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let tmp = tempfile::tempdir().unwrap();
    let c = connector(tmp.path());
    let mut targets: Vec<(String, SshTarget)> = up
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("up{i}"), s.target(&format!("up{i}"), "root")))
        .collect();
    let mut down = up[0].target("down", "root");
    down.port = Some(down_port);
    targets.insert(1, ("down".into(), down));
    let (sink, mut rx) = EventSink::channel(16);
    let drain = tokio::spawn(async move {
        let mut v = vec![];
        while let Some(e) = rx.recv().await {
            v.push(serde_json::to_string(&e).unwrap());
        }
        v
    });
    let out = run_hosts(targets, 4, CancellationToken::new(), sink, move |ctx| {
        let c = c.clone();
        async move {
            let _ = ctx.events.phase(Phase::Connecting).await;
            match c.connect(&ctx.host).await {
                Err(e) => HostOutcome::failed(&e),
                Ok(conn) => match conn.exec("true", &Privilege::None, Stdin::None).await {
                    Ok(o) if o.success() => HostOutcome::Ok,
                    Ok(o) => HostOutcome::Failed {
                        error: format!("{o:?}"),
                    },
                    Err(e) => HostOutcome::failed(&e),
                },
            }
        }
    })
    .await;
    let events = drain.await.unwrap();
    println!("{out:?}");
    assert_eq!(out[0].1, HostOutcome::Ok);
    assert_eq!(out[2].1, HostOutcome::Ok);
    match &out[1].1 {
        HostOutcome::Failed { error } => assert!(error.contains("refused"), "{error}"),
        o => panic!("{o:?}"),
    }
    assert_eq!(
        events.iter().filter(|e| e.contains("\"outcome\"")).count(),
        3
    );
}

#[tokio::test]
async fn connect_errors_are_typed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut o = options(tmp.path());
    o.connect_timeout = Duration::from_millis(700);
    let c = Connector::new(o, Arc::new(NoPassphrase)).unwrap();
    // DNS.
    let t = SshTarget {
        name: "nowhere".into(),
        address: Some("no-such-host.invalid".into()),
        ..Default::default()
    };
    let e = c.connect(&t).await.unwrap_err();
    assert!(matches!(e, ConnectError::Resolve { .. }), "{e:?}");
    // A TCP peer that never speaks SSH: handshake timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let keep = tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let t = SshTarget {
        name: "silent".into(),
        address: Some("127.0.0.1".into()),
        port: Some(port),
        ..Default::default()
    };
    let e = c.connect(&t).await.unwrap_err();
    assert!(
        matches!(
            e,
            ConnectError::Timeout {
                stage: "ssh handshake",
                ..
            }
        ),
        "{e:?}"
    );
    keep.abort();
    // Auth: a key the server does not know; the message names what was tried.
    let sshd = Sshd::start();
    let stranger = keygen(tmp.path(), "stranger", "");
    let mut t = sshd.target("auth", "root");
    t.identity_file = Some(stranger.private.clone());
    let mut o = options(tmp.path());
    o.default_identity_files = vec![];
    let c = Connector::new(o, Arc::new(NoPassphrase)).unwrap();
    let mut t2 = t.clone();
    t2.identity_file = Some(stranger.private.clone());
    let e = c.connect(&t2).await.unwrap_err();
    println!("{e}");
    match &e {
        ConnectError::Auth { tried, .. } => {
            assert_eq!(tried.len(), 1);
            assert!(tried[0].what.ends_with("stranger"));
        }
        _ => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn encrypted_key_passphrase_asked_once_per_run() {
    let sshd = Sshd::start();
    let tmp = tempfile::tempdir().unwrap();
    let enc = keygen(tmp.path(), "enc", "s3cret phrase");
    std::fs::write(
        sshd.dir.path().join("authorized_keys"),
        format!("{}\n", enc.public_line),
    )
    .unwrap();
    let asked = Arc::new(AtomicUsize::new(0));
    let a2 = asked.clone();
    let prompt = move |_: &Path| -> PassphraseFuture {
        a2.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Some(zeroize::Zeroizing::new("s3cret phrase".to_string())) })
    };
    let mut o = options(tmp.path());
    o.default_identity_files = vec![];
    let c = Arc::new(Connector::new(o, Arc::new(prompt)).unwrap());
    let mut t = sshd.target("enc", "root");
    t.identity_file = Some(enc.private.clone());
    let mut tasks = vec![];
    for _ in 0..4 {
        let (c, t) = (c.clone(), t.clone());
        tasks.push(tokio::spawn(async move { c.connect(&t).await.map(|_| ()) }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(asked.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn lost_connection_mid_command_is_unknown_outcome() {
    ensure_sudo_user();
    let sshd = Sshd::start();
    let tmp = tempfile::tempdir().unwrap();
    let c = connector(tmp.path());
    let conn = c.connect(&sshd.target("lost", SUDO_USER)).await.unwrap();
    let run =
        tokio::spawn(async move { conn.exec("sleep 30", &Privilege::None, Stdin::None).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    sshd.kill_sessions();
    let err = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("noticed")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, ExecError::UnknownOutcome { .. }), "{err:?}");
}

#[tokio::test]
async fn proxy_jump_through_another_sshd() {
    let jump = Sshd::start();
    let inner = Sshd::start();
    let tmp = tempfile::tempdir().unwrap();
    // The jump host is verified through known_hosts (it is not a fleet target).
    std::fs::write(
        tmp.path().join("known_hosts"),
        format!("[127.0.0.1]:{} {}\n", jump.port, jump.host_key),
    )
    .unwrap();
    let c = connector(tmp.path());
    let mut t = inner.target("inner", "root");
    t.proxy_jump = Some(format!("root@127.0.0.1:{}", jump.port));
    let conn = c.connect(&t).await.unwrap();
    let o = conn
        .exec("echo through", &Privilege::None, Stdin::None)
        .await
        .unwrap();
    assert_eq!(o.stdout_lossy(), "through\n");
    assert!(jump.log().contains("direct-tcpip") || !jump.log().is_empty());
}

/// A remote command that stops reading and exits while the SSH window is full: writes to its
/// stdin fail instead of waiting forever for window space (found by the e2e test of a full
/// `/nix`: `nix-store --import` died of ENOSPC and fleet's copy hung).
#[tokio::test]
async fn writing_to_a_command_that_exited_fails_instead_of_hanging() {
    let sshd = Sshd::start();
    let tmp = tempfile::tempdir().unwrap();
    let c = connector(tmp.path());
    let conn = c.connect(&sshd.target("gone", "root")).await.unwrap();
    let p = conn
        .spawn("head -c 1 >/dev/null; exit 3", &Privilege::None)
        .await
        .unwrap();
    let (stdout, mut stdin, exit) = p.into_parts();
    drop(stdout);
    // Far more than any SSH window: the remote stops granting space after its first byte.
    let chunk = vec![0u8; 1 << 20];
    let written = tokio::time::timeout(Duration::from_secs(60), async {
        for _ in 0..64 {
            stdin.write_all(&chunk).await?;
        }
        Ok::<_, std::io::Error>(())
    })
    .await
    .expect("the write returned instead of hanging");
    let err = written.expect_err("the command is gone");
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
    let info = exit.finish().await.unwrap();
    assert_eq!(info.status, Some(3));
}
