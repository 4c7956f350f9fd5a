//! The executor against the simulated fleet (fleet-testbed: hosts in network namespaces with
//! their own sshd, `/nix`, and a password-sudo user). Needs root and namespaces; never skipped.

mod simulated;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fleet_executor::*;
use fleet_testbed::{HostSpec, Testbed};
use simulated::connector;

/// A testbed host's target; `pin`: its host key pinned (else known_hosts decides).
fn target(tb: &Testbed, name: &str, pin: bool) -> SshTarget {
    SshTarget {
        host_key: pin.then(|| tb.host(name).host_key_line.clone()),
        ..simulated::target(tb, name)
    }
}

fn source(password: &str, asked: Arc<AtomicUsize>) -> Arc<SudoPasswordSource> {
    let password = password.to_owned();
    Arc::new(SudoPasswordSource::prompt(move || {
        asked.fetch_add(1, Ordering::SeqCst);
        let p = password.clone();
        Box::pin(async move { Ok(SudoPassword::new(p)) })
    }))
}

async fn run_id(
    c: Arc<Connector>,
    targets: Vec<(String, SshTarget)>,
    privilege: Privilege,
) -> Vec<(String, HostOutcome)> {
    run_hosts(
        targets,
        8,
        CancellationToken::new(),
        EventSink::discard(),
        move |ctx| {
            let (c, p) = (c.clone(), privilege.clone());
            async move {
                let conn = match c.connect(&ctx.host).await {
                    Ok(c) => c,
                    Err(e) => return HostOutcome::failed(&e),
                };
                match conn
                    .exec("id -u; cat", &p, Stdin::Bytes(Bytes::from_static(b"in\n")))
                    .await
                {
                    Ok(o) if o.success() && o.stdout == b"0\nin\n" => HostOutcome::Ok,
                    Ok(o) => HostOutcome::Failed {
                        error: format!("{o:?}"),
                    },
                    Err(e) => HostOutcome::failed(&e),
                }
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_against_the_simulated_fleet() {
    let t0 = Instant::now();
    let tb = Testbed::start([
        HostSpec::new("r1"),
        HostSpec::new("r2"),
        HostSpec::new("s1").sudo_password(),
        HostSpec::new("s2").sudo_password(),
        HostSpec::new("s3").sudo_password(),
    ])
    .expect("testbed starts (needs root and namespaces)");
    println!("testbed with 5 hosts up in {:?}", t0.elapsed());
    let c = connector(&tb);

    // Key auth as root (strict known_hosts, no pin) and as the sudo user (pinned key).
    let r1 = c.connect(&target(&tb, "r1", false)).await.unwrap();
    let o = r1
        .exec("id -un", &Privilege::None, Stdin::None)
        .await
        .unwrap();
    assert_eq!(o.stdout_lossy(), "root\n");
    let s1 = c.connect(&target(&tb, "s1", true)).await.unwrap();
    let o = s1
        .exec("id -un", &Privilege::None, Stdin::None)
        .await
        .unwrap();
    assert_eq!(o.stdout_lossy(), format!("{}\n", tb.sudo_user()));

    // Sudo with the right password on 3 hosts at once, asked once.
    let asked = Arc::new(AtomicUsize::new(0));
    let good = Privilege::Password(source(tb.sudo_password(), asked.clone()));
    let sudo_hosts: Vec<_> = ["s1", "s2", "s3"]
        .iter()
        .map(|n| (n.to_string(), target(&tb, n, true)))
        .collect();
    for (h, o) in run_id(c.clone(), sudo_hosts.clone(), good).await {
        assert_eq!(o, HostOutcome::Ok, "{h}");
    }
    assert_eq!(asked.load(Ordering::SeqCst), 1);

    // A wrong password fails cleanly on each host, asked once, no retry loop.
    let asked_bad = Arc::new(AtomicUsize::new(0));
    let bad = Privilege::Password(source("wrong-password", asked_bad.clone()));
    let t = Instant::now();
    for (h, o) in run_id(c.clone(), sudo_hosts, bad).await {
        match o {
            HostOutcome::Failed { error } => {
                assert!(error.contains("wrong sudo password"), "{h}: {error}")
            }
            o => panic!("{h}: {o:?}"),
        }
    }
    println!("wrong password reported on 3 hosts in {:?}", t.elapsed());
    assert_eq!(asked_bad.load(Ordering::SeqCst), 1);

    // A pinned key that does not match is refused with the fingerprint.
    let mut wrong_pin = target(&tb, "r1", true);
    wrong_pin.host_key = Some(tb.host("r2").host_key_line.clone());
    let e = c.connect(&wrong_pin).await.unwrap_err();
    println!("{e}");
    assert!(matches!(
        e,
        ConnectError::HostKey(HostKeyError::PinMismatch { .. })
    ));
    assert!(e.to_string().contains("SHA256:"));

    // A host whose sshd is down fails while the others succeed.
    tb.stop_sshd("r2").unwrap();
    let all: Vec<_> = ["r1", "r2", "s1"]
        .iter()
        .map(|n| (n.to_string(), target(&tb, n, true)))
        .collect();
    let asked3 = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let out = run_id(
        c.clone(),
        all,
        Privilege::Password(source(tb.sudo_password(), asked3)),
    )
    .await;
    println!("{out:?} in {:?}", t.elapsed());
    // root hosts need no sudo: the prompt never appears for root, so nothing is sent.
    assert_eq!(out[0].1, HostOutcome::Ok);
    assert!(
        matches!(&out[1].1, HostOutcome::Failed { error } if error.contains("refused")),
        "{:?}",
        out[1]
    );
    assert_eq!(out[2].1, HostOutcome::Ok);
    assert!(t.elapsed() < Duration::from_secs(30));

    tb.teardown().unwrap();
}
