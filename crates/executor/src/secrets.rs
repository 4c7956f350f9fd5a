//! Secrets: files uploaded to a host outside the Nix store (`[secrets.NAME]`, docs/secrets.md).
//!
//! The content only ever travels through an exec channel's stdin, never argv or the
//! environment. On the host it goes into a temporary file in the destination's folder that is
//! created empty, then given its final owner, group and mode, and only then written; a complete
//! file is renamed into place, an incomplete one removed (the expected length comes first on
//! stdin). The host compares the new file with the one in place (`cmp -s`) and answers only
//! `created`, `changed` or `unchanged`. fleet keeps a manifest of what it placed
//! ([`MANIFEST`]: names, paths, owner, group, mode; no content, no hash), so a secret that no
//! longer goes to a host is deleted from it.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::fanout::{HostEvents, HostOutcome, LogStream};
use crate::quote::quote;
use crate::ssh::error::ExecError;
use crate::ssh::Stdin;
use crate::sudo::Privilege;
use crate::Connection;

/// Where fleet lists the secrets it placed on a host.
pub const MANIFEST: &str = "/nix/var/fleet/secrets.json";

/// When a secret is uploaded, relative to the activation of the host's new system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum When {
    BeforeActivation,
    AfterActivation,
}

/// What fleet records about a placed secret: never its content or a hash of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretMeta {
    pub name: String,
    pub dest: String,
    pub owner: String,
    pub group: String,
    /// Permission bits, e.g. `0o400`.
    pub mode: u32,
}

/// A secret to place on one host: where, and its content (zeroed on drop; `Debug` redacts it).
#[derive(Clone)]
pub struct HostSecret {
    pub meta: SecretMeta,
    pub when: When,
    pub content: Arc<Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for HostSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostSecret")
            .field("meta", &self.meta)
            .field("when", &self.when)
            .field("content", &"<redacted>")
            .finish()
    }
}

/// What an upload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    Created,
    Changed,
    Unchanged,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Changed => "changed",
            Change::Unchanged => "unchanged",
        }
    }
}

/// Why placing or removing a secret failed. Never carries content.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("secret `{name}` could not be placed at {dest} on {host}: {reason}")]
    Upload {
        host: String,
        name: String,
        dest: String,
        reason: String,
    },
    #[error("cannot check the secrets on {host}: {reason}")]
    Check { host: String, reason: String },
    #[error("the secrets manifest {MANIFEST} on {host} could not be {what}: {reason}")]
    Manifest {
        host: String,
        what: &'static str,
        reason: String,
    },
}

/// The host-side script of one upload. Its argv holds paths, names and the mode, never content;
/// stdin is `<length>\n<content>`.
fn upload_script(m: &SecretMeta) -> String {
    format!(
        r#"set -u
dest={dest}; dir=$(dirname -- "$dest")
umask 077
if [ ! -d "$dir" ]; then mkdir -p -m 0700 -- "$dir" || exit 10; fi
tmp=$(mktemp -- "$dir/.fleet-secret.XXXXXXXX") || exit 11
trap 'rm -f -- "$tmp"' EXIT HUP INT TERM
chown -- {owner}:{group} "$tmp" || exit 12
chmod -- {mode:o} "$tmp" || exit 13
IFS= read -r want || exit 14
cat > "$tmp" || exit 15
got=$(wc -c < "$tmp") || exit 15
[ "$got" -eq "$want" ] || exit 16
if [ -f "$dest" ] && [ ! -L "$dest" ]; then
  if cmp -s -- "$tmp" "$dest" && [ "$(stat -c '%U:%G:%a' -- "$dest")" = "$(stat -c '%U:%G:%a' -- "$tmp")" ]; then
    echo unchanged; exit 0
  fi
  what=changed
else
  what=created
fi
mv -f -- "$tmp" "$dest" || exit 17
trap - EXIT HUP INT TERM
echo "$what"
"#,
        dest = quote(&m.dest),
        owner = quote(&m.owner),
        group = quote(&m.group),
        mode = m.mode,
    )
}

fn upload_failure(code: Option<u32>, stderr: &str) -> String {
    let what = match code {
        Some(10) => "could not create its folder",
        Some(11) => "could not create a temporary file next to it",
        Some(12) => "could not give it its owner and group (does the user or group exist?)",
        Some(13) => "could not set its mode",
        Some(14..=16) => "the content did not arrive whole; nothing was placed",
        Some(17) => "could not rename it into place",
        _ => "the upload failed",
    };
    let detail = stderr.trim();
    if detail.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {detail}")
    }
}

/// Places one secret on the host behind `conn`.
pub async fn upload(
    conn: &Connection,
    privilege: &Privilege,
    secret: &HostSecret,
) -> Result<Change, SecretError> {
    let len = secret.content.len();
    let mut payload = Zeroizing::new(Vec::with_capacity(len + 24));
    payload.extend_from_slice(format!("{len}\n").as_bytes());
    payload.extend_from_slice(&secret.content);
    // `Bytes` does not zero its buffer on drop: the copy lives only as long as the channel
    // needs it, in this process's memory.
    let stdin = Stdin::Bytes(Bytes::copy_from_slice(&payload));
    let out = conn
        .exec(&upload_script(&secret.meta), privilege, stdin)
        .await?;
    let fail = |reason: String| SecretError::Upload {
        host: conn.name().to_owned(),
        name: secret.meta.name.clone(),
        dest: secret.meta.dest.clone(),
        reason,
    };
    if !out.success() {
        return Err(fail(upload_failure(out.status, &out.stderr_lossy())));
    }
    match out.stdout_lossy().trim() {
        "created" => Ok(Change::Created),
        "changed" => Ok(Change::Changed),
        "unchanged" => Ok(Change::Unchanged),
        other => Err(fail(format!("unexpected answer {other:?}"))),
    }
}

/// The host-side script comparing a secret with what is in place: stdin is the content; it
/// answers `created`, `changed` or `unchanged` (what an upload would do) and writes nothing.
/// `cmp -s` prints nothing, so the content cannot reach any output or log.
fn compare_script(m: &SecretMeta) -> String {
    format!(
        r#"dest={dest}
if [ -f "$dest" ] && [ ! -L "$dest" ]; then
  if cmp -s - "$dest"; then same=1; else same=0; fi
  cat > /dev/null
  if [ "$same" = 1 ] && [ "$(stat -c '%U:%G:%a' -- "$dest")" = {want} ]; then echo unchanged; else echo changed; fi
else
  cat > /dev/null
  echo created
fi
"#,
        dest = quote(&m.dest),
        want = quote(&format!("{}:{}:{:o}", m.owner, m.group, m.mode)),
    )
}

/// What [`upload`] would do with `secret` on the host, asked without placing anything.
pub async fn compare(
    conn: &Connection,
    privilege: &Privilege,
    secret: &HostSecret,
) -> Result<Change, SecretError> {
    let stdin = Stdin::Bytes(Bytes::copy_from_slice(&secret.content));
    let out = conn
        .exec(&compare_script(&secret.meta), privilege, stdin)
        .await?;
    match (out.success(), out.stdout_lossy().trim()) {
        (true, "created") => Ok(Change::Created),
        (true, "changed") => Ok(Change::Changed),
        (true, "unchanged") => Ok(Change::Unchanged),
        _ => Err(SecretError::Check {
            host: conn.name().to_owned(),
            reason: out.stderr_lossy().trim().to_owned(),
        }),
    }
}

/// Whether the host has fleet's secrets manifest, asked as the login user (its folder is
/// readable by all; the manifest itself may not be).
pub async fn manifest_exists(conn: &Connection) -> Result<bool, SecretError> {
    let cmd = format!("[ -e {} ] && echo yes || echo no", quote(MANIFEST));
    let out = conn.exec(&cmd, &Privilege::None, Stdin::None).await?;
    Ok(out.stdout_lossy().trim() == "yes")
}

/// The manifest on the host: what fleet placed there before (empty if none).
pub async fn read_manifest(
    conn: &Connection,
    privilege: &Privilege,
) -> Result<Vec<SecretMeta>, SecretError> {
    let cmd = format!("if [ -f {m} ]; then cat {m}; fi", m = quote(MANIFEST));
    let out = conn.exec(&cmd, privilege, Stdin::None).await?;
    let fail = |reason: String| SecretError::Manifest {
        host: conn.name().to_owned(),
        what: "read",
        reason,
    };
    if !out.success() {
        return Err(fail(out.stderr_lossy().trim().to_owned()));
    }
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let m: Manifest = serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))?;
    Ok(m.secrets)
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    secrets: Vec<SecretMeta>,
}

/// Deletes what the manifest lists that is not in `keep` (by name and path), then writes `keep`
/// as the new manifest. Returns the names removed.
pub async fn prune_and_record(
    conn: &Connection,
    privilege: &Privilege,
    previous: &[SecretMeta],
    keep: &[SecretMeta],
) -> Result<Vec<String>, SecretError> {
    let stale: Vec<&SecretMeta> = previous
        .iter()
        .filter(|p| !keep.iter().any(|k| k.dest == p.dest))
        .collect();
    let mut script = String::from("set -u\n");
    for s in &stale {
        script.push_str(&format!("rm -f -- {}\n", quote(&s.dest)));
    }
    let json = serde_json::to_vec(&Manifest {
        secrets: keep.to_vec(),
    })
    .unwrap_or_default();
    script.push_str(&format!(
        "umask 077; mkdir -p -- \"$(dirname -- {m})\" && cat > {m}.tmp && mv -f -- {m}.tmp {m}\n",
        m = quote(MANIFEST)
    ));
    let out = conn
        .exec(&script, privilege, Stdin::Bytes(Bytes::from(json)))
        .await?;
    if !out.success() {
        return Err(SecretError::Manifest {
            host: conn.name().to_owned(),
            what: "updated",
            reason: out.stderr_lossy().trim().to_owned(),
        });
    }
    Ok(stale.into_iter().map(|s| s.name.clone()).collect())
}

/// Which of `secrets` are missing on the host, or are there with another owner, group or mode
/// (no content is read). A secret whose folder the login user cannot search (no sudo) is
/// neither: it is left out.
pub async fn missing(
    conn: &Connection,
    privilege: &Privilege,
    secrets: &[SecretMeta],
) -> Result<Vec<String>, SecretError> {
    let mut script = String::new();
    for s in secrets {
        script.push_str(&format!(
            "d={d}; if [ \"$(stat -c '%U:%G:%a' -- \"$d\" 2>/dev/null)\" = {want} ]; then echo ok; \
             elif [ -e \"$d\" ] || [ -x \"$(dirname -- \"$d\")\" ] || [ ! -e \"$(dirname -- \"$d\")\" ]; then echo missing; \
             else echo unknown; fi\n",
            d = quote(&s.dest),
            want = quote(&format!("{}:{}:{:o}", s.owner, s.group, s.mode)),
        ));
    }
    if script.is_empty() {
        return Ok(Vec::new());
    }
    let out = conn.exec(&script, privilege, Stdin::None).await?;
    if !out.success() {
        return Err(SecretError::Check {
            host: conn.name().to_owned(),
            reason: out.stderr_lossy().trim().to_owned(),
        });
    }
    let text = out.stdout_lossy();
    Ok(secrets
        .iter()
        .zip(text.lines())
        .filter(|(_, l)| l.trim() == "missing")
        .map(|(s, _)| s.name.clone())
        .collect())
}

/// Places the secrets of one phase (`when`) on a host, logging one line per secret (name,
/// path, what changed; never content). Stops at the first failure.
pub async fn place(
    conn: &Connection,
    privilege: &Privilege,
    secrets: &[HostSecret],
    when: When,
    ev: &HostEvents,
) -> Result<(), SecretError> {
    for s in secrets.iter().filter(|s| s.when == when) {
        let change = upload(conn, privilege, s).await?;
        let _ = ev
            .log(
                LogStream::Fleet,
                format!(
                    "secret {}: {} ({})",
                    s.meta.name,
                    change.as_str(),
                    s.meta.dest
                ),
            )
            .await;
    }
    Ok(())
}

/// After every secret of the host is placed: deletes those fleet placed before that no longer
/// go to it, and records the new list. Does nothing on a host fleet never placed a secret on
/// and that gets none.
pub async fn settle(
    conn: &Connection,
    privilege: &Privilege,
    secrets: &[HostSecret],
    ev: &HostEvents,
) -> Result<(), SecretError> {
    let previous = read_manifest(conn, privilege).await?;
    if previous.is_empty() && secrets.is_empty() {
        return Ok(());
    }
    let keep: Vec<SecretMeta> = secrets.iter().map(|s| s.meta.clone()).collect();
    for name in prune_and_record(conn, privilege, &previous, &keep).await? {
        let _ = ev
            .log(LogStream::Fleet, format!("secret {name}: removed"))
            .await;
    }
    Ok(())
}

/// Right before a host's activation: its `before-activation` secrets, which the new system may
/// read as it starts. `Some(failed)`: one could not be placed, and the host must not be activated.
pub async fn before_activation(
    conn: &Connection,
    privilege: &Privilege,
    secrets: &[HostSecret],
    ev: &HostEvents,
) -> Option<HostOutcome> {
    let e = place(conn, privilege, secrets, When::BeforeActivation, ev)
        .await
        .err()?;
    Some(HostOutcome::Failed {
        error: format!("{e}; the host was not activated"),
    })
}

/// Right after a successful activation, before its confirmation: the `after-activation`
/// secrets (for users and groups the new system created), then the stale ones removed.
/// `confirming`: the host's confirmation window, if it awaits one (then a failure leaves it
/// unconfirmed, and it reverts by itself). `Some(failed)` when something could not be done.
pub async fn after_activation(
    conn: &Connection,
    privilege: &Privilege,
    secrets: &[HostSecret],
    ev: &HostEvents,
    confirming: Option<std::time::Duration>,
) -> Option<HostOutcome> {
    let result = match place(conn, privilege, secrets, When::AfterActivation, ev).await {
        Ok(()) => settle(conn, privilege, secrets, ev).await,
        Err(e) => Err(e),
    };
    let e = result.err()?;
    Some(HostOutcome::Failed {
        error: match confirming {
            None => format!("{e}; the new system stays active"),
            Some(t) => format!(
                "{e}; not confirmed: the host reverts to its previous system within {}s",
                t.as_secs()
            ),
        },
    })
}

/// Every secret of a host placed at once, without activating (`fleet secrets push`, hosts
/// whose system is unchanged), then the stale ones removed.
pub async fn push(
    conn: &Connection,
    privilege: &Privilege,
    secrets: &[HostSecret],
    ev: &HostEvents,
) -> Result<(), SecretError> {
    place(conn, privilege, secrets, When::BeforeActivation, ev).await?;
    place(conn, privilege, secrets, When::AfterActivation, ev).await?;
    settle(conn, privilege, secrets, ev).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SecretMeta {
        SecretMeta {
            name: "wifi".into(),
            dest: "/run/keys/it's here".into(),
            owner: "root".into(),
            group: "wheel".into(),
            mode: 0o440,
        }
    }

    #[test]
    fn the_upload_script_parses_and_sets_the_mode_before_writing() {
        let script = upload_script(&meta());
        crate::quote::assert_posix_sh(&script);
        let chmod = script.find("chmod -- 440").unwrap();
        let chown = script.find("chown -- root:wheel").unwrap();
        let write = script.find("cat > \"$tmp\"").unwrap();
        assert!(chmod < write && chown < write);
    }

    /// The comparison run locally by `sh`: same content and metadata, other content, no file.
    #[test]
    fn the_comparison_answers_without_printing_content() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("s");
        std::fs::write(&dest, "hunter2").unwrap();
        let meta_of = |mode: u32| {
            let out = std::process::Command::new("stat")
                .args(["-c", "%U:%G"])
                .arg(&dest)
                .output()
                .unwrap();
            let text = String::from_utf8(out.stdout).unwrap();
            let (owner, group) = text.trim().split_once(':').unwrap();
            SecretMeta {
                name: "s".into(),
                dest: dest.to_str().unwrap().into(),
                owner: owner.into(),
                group: group.into(),
                mode,
            }
        };
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
        let run = |m: &SecretMeta, input: &str| {
            use std::io::Write;
            let mut child = std::process::Command::new("sh")
                .args(["-c", &compare_script(m)])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            let all = [out.stdout.clone(), out.stderr].concat();
            assert!(!String::from_utf8_lossy(&all).contains("hunter"));
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        };
        assert_eq!(run(&meta_of(0o600), "hunter2"), "unchanged");
        assert_eq!(run(&meta_of(0o600), "hunter3"), "changed");
        assert_eq!(run(&meta_of(0o640), "hunter2"), "changed");
        let mut gone = meta_of(0o600);
        gone.dest.push_str("-missing");
        assert_eq!(run(&gone, "hunter2"), "created");
    }

    #[test]
    fn debug_redacts_the_content() {
        let s = HostSecret {
            meta: meta(),
            when: When::BeforeActivation,
            content: Arc::new(Zeroizing::new(b"hunter2".to_vec())),
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
