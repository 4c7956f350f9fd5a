//! The shell a relayed copy runs (docs/relay.md): on the relay, a private temporary folder with
//! the run's one-off key, the downstream hosts' verified host keys and the compressed segments,
//! and the LAN hop (`cat SEGMENTS | ssh …`); on each downstream host, a FIFO its root import
//! reads and one `authorized_keys` line whose forced command writes into that FIFO; and the
//! cleanup of both. Every interpolated value is quoted; the scripts are POSIX sh.

use crate::quote;

/// Prefix of every temporary folder a relayed copy makes (on the relay and on the hosts).
pub(crate) const DIR_TEMPLATE: &str = "/tmp/fleet-relay.XXXXXXXXXX";

/// The comment that marks fleet's lines in `authorized_keys`: `fleet-relay-<id>`.
pub(crate) fn key_comment(id: &str) -> String {
    format!("fleet-relay-{id}")
}

/// On the relay, as the login user: a private folder holding the key read from stdin (never
/// in argv or the environment). Fails (exit 3) without an `ssh` client. Prints the folder, then
/// [`PIPELINED`] when its `tail` follows a file until its writer ends (GNU `tail --pid`): the
/// hops then forward segments while they arrive.
pub(crate) fn relay_setup() -> String {
    format!(
        "command -v ssh >/dev/null 2>&1 || {{ echo 'no ssh client (openssh) on the relay' >&2; exit 3; }}; \
         umask 077 && d=$(mktemp -d {}) && cat > \"$d/key\" && printf '%s\\n' \"$d\" && \
         {{ tail --pid=$$ -c 0 /dev/null >/dev/null 2>&1 && echo {PIPELINED}; true; }}",
        quote(DIR_TEMPLATE)
    )
}

/// What [`relay_setup`] prints when the hops can forward segments as they arrive.
pub(crate) const PIPELINED: &str = "pipelined";

/// What a pipelined hop says on stderr when a segment did not arrive whole (the relay's
/// upload failed or was abandoned): the host is then copied directly.
pub(crate) const INCOMPLETE: &str = "fleet-relay: a segment did not arrive whole";

/// On the relay: stdin into segment `n`'s file, its writer's pid published first (`sN.pid`,
/// atomically) so that pipelined hops follow the file until the writer ends.
pub(crate) fn segment_upload(dir: &str, n: usize) -> String {
    let f = quote(&format!("{dir}/{}", segment_file(n)));
    format!("umask 077 && : > {f} && echo $$ > {f}.t && mv {f}.t {f}.pid && cat >> {f}")
}

/// On the relay: an empty marker file `DIR/NAME` (`sN.ok`: segment `n` arrived whole, said by
/// the deployer once its upload ended well; `abort`: the uploads stopped).
pub(crate) fn mark(dir: &str, name: &str) -> String {
    format!("umask 077 && : > {}", quote(&format!("{dir}/{name}")))
}

/// The marker that segment `n` arrived whole.
pub(crate) fn segment_ok(n: usize) -> String {
    format!("{}.ok", segment_file(n))
}

/// On the relay: stdin into `DIR/NAME`, private.
pub(crate) fn write_file(dir: &str, name: &str) -> String {
    format!("umask 077 && cat > {}", quote(&format!("{dir}/{name}")))
}

/// File name of segment `n` in the relay's folder.
pub(crate) fn segment_file(n: usize) -> String {
    format!("s{n}")
}

/// A `known_hosts` line for `host` (the address the relay dials) on `port`.
pub(crate) fn known_hosts_line(host: &str, port: u16, key: &str) -> String {
    if port == 22 {
        format!("{host} {key}")
    } else {
        format!("[{host}]:{port} {key}")
    }
}

/// Where the relay dials a downstream host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dial {
    pub host: String,
    pub port: u16,
    pub user: String,
}

/// On the relay: the host's segments, then the end marker, into `ssh` to the host, with the
/// run's key only, no agent, no config, strict host key checking against the folder's
/// `known_hosts`. The host's forced command writes them into its FIFO. Exit 255: the hop
/// itself failed (connection, host key, authentication).
pub(crate) fn forward(dir: &str, segments: &[usize], dial: &Dial) -> String {
    let files = stream_files(dir, segments);
    format!("cat {} | {}", files.join(" "), ssh_to(dir, dial))
}

/// On the relay, pipelined: like [`forward`], but each segment is followed while it arrives
/// (`tail -f` until its writer ends), and the end marker is sent only if every segment arrived
/// whole (`sN.ok`); otherwise it says [`INCOMPLETE`] and the host's import gets no end (it
/// fails, nothing partial is registered). A wait ends with `abort`, with the folder, or after
/// 10 minutes.
pub(crate) fn forward_pipelined(dir: &str, segments: &[usize], dial: &Dial) -> String {
    let d = quote(dir);
    let names: Vec<String> = segments.iter().map(|&n| segment_file(n)).collect();
    let wait = |file: &str| {
        format!(
            "n=0; while [ ! -e {d}/{file} ]; do \
             if [ -e {d}/abort ] || [ ! -d {d} ] || [ $n -gt 6000 ]; then echo {} >&2; exit 1; fi; \
             n=$((n+1)); sleep 0.1; done",
            quote(INCOMPLETE)
        )
    };
    format!(
        "{{ for s in {}; do {}; tail -c +1 -s 0.2 -f --pid=\"$(cat {d}/$s.pid)\" {d}/$s || exit 1; {}; done; \
         cat {d}/end; }} | {}",
        names.join(" "),
        wait("$s.pid"),
        wait("$s.ok"),
        ssh_to(dir, dial),
    )
}

/// The relay's `ssh` to a downstream host (see [`forward`]).
fn ssh_to(dir: &str, dial: &Dial) -> String {
    format!(
        "ssh -F /dev/null -T -i {} -o IdentitiesOnly=yes -o IdentityAgent=none \
         -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} \
         -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=10 -o LogLevel=ERROR -p {} {}",
        quote(&format!("{dir}/key")),
        quote(&format!("{dir}/known_hosts")),
        dial.port,
        quote(&format!("{}@{}", dial.user, dial.host)),
    )
}

/// A host's stream on the relay: its segment files, then the end marker.
fn stream_files(dir: &str, segments: &[usize]) -> Vec<String> {
    let mut files: Vec<String> = segments
        .iter()
        .map(|&n| quote(&format!("{dir}/{}", segment_file(n))))
        .collect();
    files.push(quote(&format!("{dir}/end")));
    files
}

/// On the relay, with its privilege: its own import (`import`, from `copy::import_command`)
/// reading its segment files.
pub(crate) fn import_from_files(dir: &str, segments: &[usize], import: &str) -> String {
    format!(
        "cat {} | ( {import} )",
        stream_files(dir, segments).join(" ")
    )
}

/// The options of fleet's `authorized_keys` line (before the key): no pty or forwarding, only
/// from the relay, not after `expiry` (`YYYYMMDDHHMMZ`), only `cat > FIFO`.
pub(crate) fn line_options(from: &str, expiry: &str, fifo: &str) -> String {
    format!("restrict,from=\"{from}\",expiry-time=\"{expiry}\",command=\"cat > {fifo}\"")
}

/// `awk` program that drops fleet's relay lines whose `expiry-time` (UTC) is before `now`
/// (`-v now=YYYYMMDDHHMM`) and, when `-v id=…` is set, the line of that run.
const PRUNE_AWK: &str = r#"index($0, "fleet-relay-") { s = " fleet-relay-" id; if (id != "" && substr($0, length($0) - length(s) + 1) == s) next; if (match($0, /expiry-time="[0-9]+/)) { t = substr($0, RSTART + 13, 12); if (t < now) next } } { print }"#;

/// Rewrites `~/.ssh/authorized_keys` through `awk` (with `-v` args `vars`), keeping the file's
/// mode and owner (its content is replaced, not the file).
fn rewrite_keys(vars: &str) -> String {
    format!(
        "f=\"$HOME/.ssh/authorized_keys\"; if [ -f \"$f\" ]; then \
         t=$(mktemp \"$HOME/.ssh/.fleet-relay.XXXXXXXXXX\") && \
         awk -v now=\"$(date -u +%Y%m%d%H%M)\" {vars} {} \"$f\" > \"$t\" && \
         {{ cmp -s \"$t\" \"$f\" || cat \"$t\" > \"$f\"; }}; rm -f \"$t\"; fi",
        quote(PRUNE_AWK)
    )
}

/// On a downstream host, as the login user: a private folder with a FIFO (0600); expired
/// fleet lines pruned; one line appended to `~/.ssh/authorized_keys` (created 0600, in a
/// `~/.ssh` created 0700, when missing): [`line_options`] with the FIFO, the key, and
/// `fleet-relay-<id>`. Prints the folder.
pub(crate) fn host_setup(from: &str, expiry: &str, public_key: &str, id: &str) -> String {
    let options = line_options(from, expiry, "\u{0}");
    let (before, rest) = options.split_once('\u{0}').expect("the FIFO's place");
    let after = format!("{rest} {public_key} {}", key_comment(id));
    format!(
        "umask 077 && d=$(mktemp -d {}) && mkfifo -m 600 \"$d/fifo\" && \
         {{ [ -d \"$HOME/.ssh\" ] || mkdir -m 700 \"$HOME/.ssh\"; }} && \
         {{ [ -e \"$HOME/.ssh/authorized_keys\" ] || : > \"$HOME/.ssh/authorized_keys\"; }} && \
         {{ {}; }} && \
         printf '%s%s%s\\n' {} \"$d/fifo\" {} >> \"$HOME/.ssh/authorized_keys\" && \
         printf '%s\\n' \"$d\"",
        quote(DIR_TEMPLATE),
        rewrite_keys("-v id="),
        quote(before),
        quote(&after),
    )
}

/// On a downstream host, with the privilege: the compressed import (`import`, from
/// `copy::import_command`) reading the FIFO instead of the channel.
pub(crate) fn import_from_fifo(dir: &str, import: &str) -> String {
    format!("exec 0< {} && {import}", quote(&format!("{dir}/fifo")))
}

/// On a downstream host, as the login user, idempotent: fleet's line of run `id` (and every
/// expired one) out of `authorized_keys`, a reader still blocked on the FIFO woken (an open
/// for writing that does not wait for a reader), the folder removed.
pub(crate) fn host_cleanup(dir: &str, id: &str) -> String {
    let fifo = quote(&format!("{dir}/fifo"));
    format!(
        "{}; if [ -p {fifo} ]; then dd if=/dev/null of={fifo} oflag=nonblock 2>/dev/null; fi; \
         rm -rf {}; true",
        rewrite_keys(&format!("-v id={}", quote(id))),
        quote(dir)
    )
}

/// On the relay, idempotent: the folder (key, known_hosts, segments) removed.
pub(crate) fn relay_cleanup(dir: &str) -> String {
    format!("rm -rf {}", quote(dir))
}

/// `YYYYMMDDHHMMZ` (UTC) for seconds since the epoch: the `expiry-time` form sshd reads.
pub(crate) fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}Z",
        rem / 3600,
        (rem % 3600) / 60
    )
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::quote::assert_posix_sh;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    #[test]
    fn the_scripts_are_posix_sh() {
        let dial = Dial {
            host: "10.0.0.5".into(),
            port: 2222,
            user: "deploy".into(),
        };
        for s in [
            relay_setup(),
            write_file("/tmp/fleet-relay.x", "known_hosts"),
            forward("/tmp/fleet-relay.x", &[0, 3], &dial),
            forward_pipelined("/tmp/fleet-relay.x", &[0, 3], &dial),
            segment_upload("/tmp/fleet-relay.x", 2),
            mark("/tmp/fleet-relay.x", &segment_ok(2)),
            host_setup("10.0.0.2", "202611301200Z", KEY, "1-2-3"),
            import_from_fifo("/tmp/fleet-relay.y", "zstd -dc | nix-store --import"),
            import_from_files(
                "/tmp/fleet-relay.x",
                &[0, 2],
                "a && zstd -dc | nix-store --import",
            ),
            host_cleanup("/tmp/fleet-relay.y", "1-2-3"),
            relay_cleanup("/tmp/fleet-relay.x"),
        ] {
            assert_posix_sh(&s);
        }
        let f = forward("/tmp/d", &[1], &dial);
        assert!(f.starts_with("cat /tmp/d/s1 /tmp/d/end | ssh -F /dev/null -T -i /tmp/d/key"));
        assert!(f.ends_with("-p 2222 deploy@10.0.0.5"), "{f}");
        assert!(f.contains("-o StrictHostKeyChecking=yes -o UserKnownHostsFile=/tmp/d/known_hosts"));
    }

    #[test]
    fn the_line_restricts_the_key() {
        assert_eq!(
            line_options("10.0.0.2", "202611301200Z", "/tmp/fleet-relay.a/fifo"),
            "restrict,from=\"10.0.0.2\",expiry-time=\"202611301200Z\",command=\"cat > /tmp/fleet-relay.a/fifo\""
        );
        assert_eq!(known_hosts_line("h", 22, KEY), format!("h {KEY}"));
        assert_eq!(known_hosts_line("h", 2222, KEY), format!("[h]:2222 {KEY}"));
        assert_eq!(utc_stamp(0), "197001010000Z");
        assert_eq!(utc_stamp(1_796_036_400), "202611301100Z");
        assert_eq!(utc_stamp(951_782_400 + 86_399), "200002292359Z");
    }

    fn sh(home: &std::path::Path, script: &str) -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("HOME", home)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The setup appends exactly one line (pruning expired fleet lines, keeping the others
    /// and the file's mode); the cleanup removes it and the folder, and running it again
    /// changes nothing.
    #[test]
    fn setup_then_cleanup_twice_leaves_the_file_as_it_was() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let ssh = home.path().join(".ssh");
        std::fs::create_dir(&ssh).unwrap();
        let keys = ssh.join("authorized_keys");
        let mine = format!("{KEY} me@laptop\n");
        let expired = format!(
            "restrict,from=\"10.0.0.9\",expiry-time=\"202001010000Z\",command=\"cat > /tmp/x\" {KEY} fleet-relay-old-1\n"
        );
        std::fs::write(&keys, format!("{mine}{expired}")).unwrap();
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o640)).unwrap();

        let dir = sh(
            home.path(),
            &host_setup("10.0.0.2", "209901010000Z", KEY, "run-7"),
        );
        let dir = dir.trim();
        assert!(dir.starts_with("/tmp/fleet-relay."), "{dir}");
        let text = std::fs::read_to_string(&keys).unwrap();
        assert!(text.starts_with(&mine), "{text}");
        assert!(
            !text.contains("fleet-relay-old-1"),
            "expired line pruned: {text}"
        );
        let want = format!(
            "{} {KEY} fleet-relay-run-7\n",
            line_options("10.0.0.2", "209901010000Z", &format!("{dir}/fifo"))
        );
        assert_eq!(text, format!("{mine}{want}"));
        let fifo = std::fs::metadata(format!("{dir}/fifo")).unwrap();
        assert_eq!(fifo.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
            0o640
        );

        for _ in 0..2 {
            sh(home.path(), &host_cleanup(dir, "run-7"));
            assert_eq!(std::fs::read_to_string(&keys).unwrap(), mine);
            assert!(!std::path::Path::new(dir).exists());
            assert_eq!(
                std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
                0o640
            );
        }
        // The cleanup of another run's id leaves this line alone.
        let dir2 = sh(
            home.path(),
            &host_setup("10.0.0.2", "209901010000Z", KEY, "run-8"),
        );
        sh(
            home.path(),
            &host_cleanup("/tmp/fleet-relay.none", "run-80"),
        );
        assert!(std::fs::read_to_string(&keys)
            .unwrap()
            .contains("fleet-relay-run-8\n"));
        sh(home.path(), &host_cleanup(dir2.trim(), "run-8"));
        assert_eq!(std::fs::read_to_string(&keys).unwrap(), mine);
    }

    /// A reader blocked on the FIFO (the root import waiting for the hop) is woken by the
    /// cleanup, which does not itself wait when there is no reader.
    #[test]
    fn cleanup_wakes_a_reader_blocked_on_the_fifo() {
        let home = tempfile::tempdir().unwrap();
        let dir = sh(
            home.path(),
            &host_setup("10.0.0.2", "209901010000Z", KEY, "r1"),
        );
        let dir = dir.trim().to_owned();
        let mut reader = Command::new("sh")
            .arg("-c")
            .arg(format!("cat < {dir}/fifo"))
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        sh(home.path(), &host_cleanup(&dir, "r1"));
        let start = std::time::Instant::now();
        loop {
            if reader.try_wait().unwrap().is_some() {
                break;
            }
            assert!(start.elapsed().as_secs() < 5, "the reader is still blocked");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// A pipelined hop (its part before `ssh`) streams a segment while its writer still writes,
    /// and sends the end only once the segment is marked whole; an aborted upload ends it with
    /// [`INCOMPLETE`] and no end.
    #[test]
    fn a_pipelined_hop_follows_the_segment_and_ends_only_when_it_is_whole() {
        let dial = Dial {
            host: "h".into(),
            port: 22,
            user: "u".into(),
        };
        let hop_of = |dir: &str| {
            let script = forward_pipelined(dir, &[0], &dial);
            let (before, _) = script.rsplit_once(" | ssh ").unwrap();
            before.to_owned()
        };
        for whole in [true, false] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().to_str().unwrap().to_owned();
            std::fs::write(format!("{dir}/end"), "END").unwrap();
            let mut writer = Command::new("sh")
                .arg("-c")
                .arg(segment_upload(&dir, 0))
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut hop = Command::new("sh")
                .arg("-c")
                .arg(hop_of(&dir))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let mut hop_out = hop.stdout.take().unwrap();
            let reader = std::thread::spawn(move || {
                use std::io::Read;
                let mut buf = [0u8; 64];
                let mut all = Vec::new();
                while let Ok(n) = hop_out.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    all.extend_from_slice(&buf[..n]);
                    let _ = tx.send(all.len());
                }
                all
            });
            {
                use std::io::Write;
                let mut w = writer.stdin.take().unwrap();
                w.write_all(b"first ").unwrap();
                w.flush().unwrap();
                // Forwarded while the writer is still writing.
                let got = rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
                assert_eq!(got, 6);
                w.write_all(b"second ").unwrap();
            }
            assert!(writer.wait().unwrap().success());
            let marker = if whole { segment_ok(0) } else { "abort".into() };
            sh(tmp.path(), &mark(&dir, &marker));
            let out = hop.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr);
            if whole {
                assert_eq!(stdout, "first second END", "{stderr}");
            } else {
                assert_eq!(stdout, "first second ", "{stderr}");
                assert!(stderr.contains(INCOMPLETE), "{stderr}");
            }
        }
    }
}
