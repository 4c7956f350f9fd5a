//! The build: one `nix-store --realise --keep-going` for the union of all packages, then GC roots.

use std::collections::BTreeSet;
use std::process::Stdio;

use camino::{Utf8Path, Utf8PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::error::BuildError;
use crate::nix;
use crate::spec::{BuildEvent, BuildOptions};

/// What one realise did.
pub(crate) struct Realised {
    /// Derivations Nix built (from its `building '…'` lines).
    pub built: Vec<String>,
    /// Nix's `error: …` messages, each with its indented continuation lines.
    pub errors: Vec<String>,
}

/// Build `drvs` in one process, with `--keep-going` so one failure does not stop the others.
/// Temporary GC roots at `temp_root` (and `temp_root-N`) hold the outputs until the caller made
/// the per-host roots.
pub(crate) async fn realise(
    drvs: &[String],
    temp_root: &Utf8Path,
    opts: &BuildOptions,
) -> Result<Realised, BuildError> {
    let mut args = vec![
        "--realise".to_owned(),
        "--keep-going".to_owned(),
        "--add-root".to_owned(),
        temp_root.to_string(),
        "--indirect".to_owned(),
    ];
    args.extend(drvs.iter().cloned());
    let mut child = nix::command("nix-store", &args, &opts.nix_env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| nix::spawn_error("nix-store", e))?;
    let mut stdout = child.stdout.take().expect("piped");
    let drain = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s).await;
        s
    });
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut built = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut in_error = false;
    let mut other = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(drv) = line
            .strip_prefix("building '")
            .and_then(|r| r.split('\'').next())
        {
            opts.emit(BuildEvent::Building {
                drv: drv.to_owned(),
            });
            built.push(drv.to_owned());
            in_error = false;
        } else if line.starts_with("error: ") {
            errors.push(line);
            in_error = true;
        } else if in_error && (line.starts_with(' ') || line.is_empty()) {
            let last = errors.last_mut().expect("in_error implies one");
            last.push('\n');
            last.push_str(&line);
        } else {
            in_error = false;
            other.push_str(&line);
            other.push('\n');
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| nix::spawn_error("nix-store", e))?;
    let _ = drain.await;
    if !status.success() && errors.is_empty() {
        // Failed without saying which derivation: not a per-host problem.
        return Err(BuildError::Nix {
            command: nix::display("nix-store", &args[..5]) + " <derivations>",
            status: status.to_string(),
            stderr: nix::excerpt(&other),
        });
    }
    Ok(Realised { built, errors })
}

/// The subset of `paths` that are not valid in the local store (one process).
pub(crate) async fn invalid_paths(
    paths: &[String],
    opts: &BuildOptions,
) -> Result<BTreeSet<String>, BuildError> {
    if paths.is_empty() {
        return Ok(BTreeSet::new());
    }
    let mut args = vec!["--check-validity".to_owned(), "--print-invalid".to_owned()];
    args.extend(paths.iter().cloned());
    let out = nix::run("nix-store", &args, &opts.nix_env).await?;
    if !out.success {
        return Err(BuildError::Nix {
            command: "nix-store --check-validity --print-invalid <paths>".into(),
            status: out.status,
            stderr: nix::excerpt(&out.stderr),
        });
    }
    Ok(out.stdout.lines().map(str::to_owned).collect())
}

/// The derivations in the closure of `drv` (`nix-store -qR`).
pub(crate) async fn drv_closure(
    drv: &str,
    opts: &BuildOptions,
) -> Result<BTreeSet<String>, BuildError> {
    let args = vec![
        "--query".to_owned(),
        "--requisites".to_owned(),
        drv.to_owned(),
    ];
    let out = nix::run("nix-store", &args, &opts.nix_env).await?;
    if !out.success {
        return Err(BuildError::Nix {
            command: nix::display("nix-store", &args),
            status: out.status,
            stderr: nix::excerpt(&out.stderr),
        });
    }
    Ok(out
        .stdout
        .lines()
        .filter(|l| l.ends_with(".drv"))
        .map(str::to_owned)
        .collect())
}

/// The error for a host whose package did not build: Nix's messages about derivations in its
/// closure, and the end of each failed derivation's build log (`nix-store --read-log`).
pub(crate) async fn host_build_error(
    closure: &BTreeSet<String>,
    realised: &Realised,
    opts: &BuildOptions,
) -> BuildError {
    let mut failed: Vec<String> = Vec::new();
    let mut text = Vec::new();
    for e in &realised.errors {
        let drvs = mentioned_drvs(e);
        // An error that names no derivation is about Nix itself (e.g. "the build users group
        // 'nixbld' has no members"): every host whose build failed gets it whole.
        if drvs.is_empty() {
            text.push(e.clone());
        } else if drvs.iter().any(|d| closure.contains(d)) {
            if let Some(first) = drvs.first() {
                if e.starts_with("error: builder for ") && !failed.contains(first) {
                    failed.push(first.clone());
                }
            }
            text.push(e.clone());
        }
    }
    for drv in &failed {
        let args = vec!["--read-log".to_owned(), drv.clone()];
        if let Ok(out) = nix::run("nix-store", &args, &opts.nix_env).await {
            if out.success && !out.stdout.trim().is_empty() {
                let lines: Vec<&str> = out.stdout.trim_end().lines().collect();
                let tail = &lines[lines.len().saturating_sub(20)..];
                text.push(format!("build log of {drv} (last {} lines):", tail.len()));
                text.extend(tail.iter().map(|l| format!("> {l}")));
            }
        }
        text.push(format!(
            "full build log: `nix-store --read-log {drv}` (or `nix log {drv}`)"
        ));
    }
    if text.is_empty() {
        // Nix failed and said nothing about this host's closure: show all it said.
        text.extend(realised.errors.iter().cloned());
    }
    BuildError::Build {
        failed,
        stderr: nix::excerpt(&text.join("\n")),
    }
}

fn mentioned_drvs(s: &str) -> Vec<String> {
    s.split(['\'', '"', ' ', '\n', '`'])
        .filter(|w| w.starts_with("/nix/store/") && w.ends_with(".drv"))
        .map(str::to_owned)
        .collect()
}

/// A GC root name for a host: its name with `/` replaced, never hidden.
pub(crate) fn root_name(host: &str) -> String {
    let s = host.replace('/', "_");
    if s.starts_with('.') || s.is_empty() {
        format!("_{s}")
    } else {
        s
    }
}

/// The roots Nix's garbage collector follows from `gcroots/auto` of its state directory
/// (`NIX_STATE_DIR`, else `/nix/var/nix`): what each indirect root's link there points at.
/// `None` when that folder cannot be read.
pub(crate) fn registered_roots(opts: &BuildOptions) -> Option<BTreeSet<std::path::PathBuf>> {
    let state = opts
        .nix_env
        .iter()
        .find(|(k, _)| k == "NIX_STATE_DIR")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var("NIX_STATE_DIR").ok())
        .unwrap_or_else(|| "/nix/var/nix".to_owned());
    let dir = std::fs::read_dir(Utf8Path::new(&state).join("gcroots").join("auto")).ok()?;
    Some(
        dir.flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .collect(),
    )
}

/// `root` is already an indirect GC root of `path`, as [`add_root`] would leave it: it links
/// to `path` and Nix's `gcroots/auto` links to it (`registered`, from [`registered_roots`]).
pub(crate) fn root_in_place(
    registered: &BTreeSet<std::path::PathBuf>,
    root: &Utf8Path,
    path: &str,
) -> bool {
    let Ok(abs) = crate::prepare::absolute(root) else {
        return false;
    };
    std::fs::read_link(root).is_ok_and(|t| t.as_os_str() == path)
        && registered.contains(abs.as_std_path())
}

/// Make `root` an indirect GC root for the (valid) `path`.
pub(crate) async fn add_root(
    path: &str,
    root: &Utf8PathBuf,
    opts: &BuildOptions,
) -> Result<(), BuildError> {
    let args = vec![
        "--realise".to_owned(),
        path.to_owned(),
        "--add-root".to_owned(),
        root.to_string(),
        "--indirect".to_owned(),
    ];
    let out = nix::run("nix-store", &args, &opts.nix_env).await?;
    if !out.success {
        return Err(BuildError::Nix {
            command: nix::display("nix-store", &args),
            status: out.status,
            stderr: nix::excerpt(&out.stderr),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drvs_in_error_text() {
        let e = "error: builder for '/nix/store/abc-x.drv' failed with exit code 1;\n       last 1 log lines:\n       > boom";
        assert_eq!(mentioned_drvs(e), vec!["/nix/store/abc-x.drv"]);
    }

    fn realised(errors: &[&str]) -> Realised {
        Realised {
            built: Vec::new(),
            errors: errors.iter().map(|e| (*e).to_owned()).collect(),
        }
    }

    #[tokio::test]
    async fn an_error_naming_no_derivation_reaches_the_user_whole() {
        let closure: BTreeSet<String> = ["/nix/store/abc-x.drv".to_owned()].into();
        let e = realised(&["error: the build users group 'nixbld' has no members"]);
        let err = host_build_error(&closure, &e, &BuildOptions::new("/tmp")).await;
        let text = err.to_string();
        assert!(
            text.contains("the build users group 'nixbld' has no members"),
            "{text}"
        );
        assert!(!text.contains("0 derivation(s)"), "{text}");
    }

    #[tokio::test]
    async fn a_failed_derivation_points_at_its_full_log() {
        let closure: BTreeSet<String> = ["/nix/store/abc-x.drv".to_owned()].into();
        let e = realised(&[
            "error: builder for '/nix/store/abc-x.drv' failed with exit code 1",
            "error: builder for '/nix/store/zzz-other.drv' failed with exit code 1",
        ]);
        let text = host_build_error(&closure, &e, &BuildOptions::new("/tmp"))
            .await
            .to_string();
        assert!(
            text.starts_with("build failed (1 derivation(s) failed: /nix/store/abc-x.drv)"),
            "{text}"
        );
        assert!(
            text.contains("nix-store --read-log /nix/store/abc-x.drv"),
            "{text}"
        );
        assert!(!text.contains("zzz-other"), "{text}");
    }

    #[test]
    fn root_names() {
        assert_eq!(root_name("pi 1"), "pi 1");
        assert_eq!(root_name("a/b"), "a_b");
        assert_eq!(root_name(".x"), "_.x");
    }
}
