//! Hosts that substitute (`substitute = true`, docs/scale.md): a host fetches what it can of
//! its missing paths from its own configured substituters (a LAN binary cache, cache.nixos.org)
//! before fleet copies the rest, as `nix-copy-closure --use-substitutes` does.
//!
//! - At plan time, [`substitutable`] asks the host which of its missing paths its substituters
//!   offer: `nix-store --realise --dry-run` as the login user (read-only; through the daemon on
//!   NixOS), which lists what "will be fetched". Nix 2.8 to 2.34 all print that list.
//! - At apply time, [`substitute`] lets the host fetch them over its store session: the serve
//!   protocol's QueryValidPaths with its `substitute` flag, exactly what `nix-copy-closure
//!   --use-substitutes` sends (the remote `nix-store --serve --write` substitutes, logs a
//!   warning for what fails, and answers which paths are now valid). Whatever is still missing
//!   is copied by fleet as usual: a substitution failure never fails a deploy.

use std::collections::BTreeSet;
use std::time::Duration;

use fleet_store::StorePath;

use crate::ssh::error::ExecError;
use crate::store::StoreSession;
use crate::sudo::Privilege;
use crate::{Connection, Stdin};

/// Why the plan-time question could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum SubstitutableError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("nix-store --realise --dry-run on {host} exited with {status:?}: {stderr}")]
    Failed {
        host: String,
        status: Option<u32>,
        stderr: String,
    },
}

/// Which of `missing` the host's own substituters offer, asked with one read-only command.
/// The paths go on stdin (`xargs`), so a large closure never meets a command-line limit.
pub async fn substitutable(
    conn: &Connection,
    missing: &BTreeSet<StorePath>,
) -> Result<BTreeSet<StorePath>, SubstitutableError> {
    if missing.is_empty() {
        return Ok(BTreeSet::new());
    }
    let list: String = missing
        .iter()
        .map(|p| format!("{}\n", p.as_str()))
        .collect();
    let out = conn
        .exec(
            "xargs nix-store --realise --dry-run 2>&1",
            &Privilege::None,
            Stdin::Bytes(list.into()),
        )
        .await?;
    let text = out.stdout_lossy();
    let fetched = will_be_fetched(&text);
    if !out.success() && fetched.is_empty() {
        return Err(SubstitutableError::Failed {
            host: conn.name().to_owned(),
            status: out.status,
            stderr: text.trim().to_owned(),
        });
    }
    Ok(fetched
        .into_iter()
        .filter_map(|p| StorePath::new(p).ok())
        .filter(|p| missing.contains(p))
        .collect())
}

/// The paths of the "will be fetched" lists in `nix-store --realise --dry-run` output
/// (`these N paths will be fetched (…):` or `this path will be fetched (…):`, then one
/// indented path per line).
fn will_be_fetched(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.contains("will be fetched") {
            inside = true;
        } else if inside && line.starts_with(char::is_whitespace) {
            let p = line.trim();
            if p.starts_with("/nix/store/") {
                out.push(p.to_owned());
            }
        } else {
            inside = false;
        }
    }
    out
}

/// What [`substitute`] did.
#[derive(Debug, Default)]
pub struct Substituted {
    /// Paths of `missing` the host now has (fetched from its substituters).
    pub paths: BTreeSet<StorePath>,
    /// Why substitution stopped early (timeout, a failed session), if it did; the paths not
    /// substituted are copied by fleet.
    pub error: Option<String>,
}

/// Lets the host fetch `missing` from its substituters over its store session (serve
/// QueryValidPaths with `lock` and `substitute`), within `timeout`. A session that fails or
/// times out is replaced by a new one (as `lock`ed as the old), so the copy that follows
/// always has one; if even that fails, `session` is `None` and the error says why.
pub async fn substitute(
    conn: &Connection,
    privilege: &Privilege,
    session: &mut Option<StoreSession>,
    missing: &BTreeSet<StorePath>,
    timeout: Duration,
) -> Substituted {
    let Some(s) = session.as_mut() else {
        return Substituted {
            error: Some("no store session".into()),
            ..Substituted::default()
        };
    };
    let paths: Vec<StorePath> = missing.iter().cloned().collect();
    let asked = tokio::time::timeout(timeout, s.client.query_valid_paths(&paths, true, true));
    let error = match asked.await {
        Ok(Ok(valid)) => {
            return Substituted {
                paths: valid,
                error: None,
            }
        }
        Ok(Err(e)) => match session.take() {
            Some(s) => crate::error_chain(&s.fail(e).await),
            None => e.to_string(),
        },
        Err(_) => {
            // Mid-request: the old session cannot be used any more.
            drop(session.take());
            format!("the host's substituters took longer than {timeout:?}")
        }
    };
    // A new session for the copy; it also says what did arrive before the failure.
    match StoreSession::open(conn, privilege).await {
        Ok(mut fresh) => match fresh.valid_paths(&paths, true).await {
            Ok(valid) => {
                *session = Some(fresh);
                Substituted {
                    paths: valid,
                    error: Some(error),
                }
            }
            Err(e) => Substituted {
                paths: BTreeSet::new(),
                error: Some(format!(
                    "{error}; a new store session failed: {}",
                    crate::error_chain(&fresh.fail(e).await)
                )),
            },
        },
        Err(e) => Substituted {
            paths: BTreeSet::new(),
            error: Some(format!(
                "{error}; a new store session failed: {}",
                crate::error_chain(&e)
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_run_lists_of_nix_2_8_and_later() {
        let a = format!("/nix/store/{}-a", "a".repeat(32));
        let b = format!("/nix/store/{}-b", "b".repeat(32));
        let c = format!("/nix/store/{}-c", "c".repeat(32));
        // As printed by Nix 2.8 and 2.34 (checked here; the sizes' units differ).
        let text = format!(
            "these 2 paths will be fetched (0.00 MiB download, 0.00 MiB unpacked):\n  {a}\n  {b}\n\
             don't know how to build these paths:\n  {c}\n"
        );
        assert_eq!(will_be_fetched(&text), vec![a.clone(), b]);
        let one =
            format!("this path will be fetched (0.0 MiB download, 0.1 MiB unpacked):\n  {a}\n");
        assert_eq!(will_be_fetched(&one), vec![a]);
        let none = format!("don't know how to build these paths:\n  {c}\n");
        assert!(will_be_fetched(&none).is_empty());
        let warn = "warning: unable to download 'http://x/nix-cache-info': Couldn't connect\n";
        assert!(will_be_fetched(warn).is_empty());
    }
}
