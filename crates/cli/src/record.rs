//! What fleet records on a host at each apply: fleet.toml's git commit and whether the tree was
//! dirty, who deployed from where, and when.

use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use camino::Utf8Path;

/// The run-wide part of a deployment record.
#[derive(Debug, Clone)]
pub struct Provenance {
    pub commit: Option<String>,
    pub dirty: Option<bool>,
    /// `user@machine`.
    pub by: String,
    /// RFC 3339, UTC.
    pub at: String,
}

impl Provenance {
    /// Reads git state of `fleet_dir` (none when it is not in a git work tree or git is
    /// missing; fleet's own `.fleet/` does not make it dirty), the local user and machine, and the time.
    pub fn now(fleet_dir: &Utf8Path) -> Self {
        let git = |args: &[&str]| {
            Command::new("git")
                .arg("-C")
                .arg(fleet_dir)
                .args(args)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        };
        let commit = git(&["rev-parse", "HEAD"]).map(|s| s.trim().to_owned());
        let dirty = commit
            .as_ref()
            .and_then(|_| git(&["status", "--porcelain", "--", ".", ":(exclude).fleet"]))
            .map(|s| !s.trim().is_empty());
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(login_name)
            .unwrap_or_else(|| "unknown".into());
        let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Provenance {
            commit,
            dirty,
            by: format!("{user}@{machine}"),
            at: rfc3339(secs),
        }
    }
}

/// The name of this process's user in `/etc/passwd` (when `$USER` is not set, e.g. in CI).
fn login_name() -> Option<String> {
    let uid = rustix::process::getuid().as_raw().to_string();
    std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            (f.nth(1)? == uid).then(|| name.to_owned())
        })
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (UTC).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Creates `<fleet_dir>/.fleet/` (GC roots of built systems, saved state) with a
/// `.gitignore` of `*`, so fleet's files never show up in the user's git status.
pub fn ensure_state_dir(fleet_dir: &Utf8Path) -> std::io::Result<()> {
    let dir = fleet_dir.join(".fleet");
    std::fs::create_dir_all(&dir)?;
    let ignore = dir.join(".gitignore");
    if !ignore.exists() {
        std::fs::write(
            ignore,
            "# Created by fleet: GC roots and state, not for git.\n*\n",
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_state_is_git_ignored_and_does_not_make_the_tree_dirty() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(tmp.path()).unwrap();
        let git = |args: &[&str]| {
            let ok = Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "git {args:?}");
        };
        git(&["init", "-q"]);
        std::fs::write(dir.join("fleet.toml"), "").unwrap();
        git(&["add", "fleet.toml"]);
        git(&["commit", "-qm", "x"]);
        assert_eq!(Provenance::now(dir).dirty, Some(false));
        ensure_state_dir(dir).unwrap();
        std::fs::create_dir_all(dir.join(".fleet/gcroots")).unwrap();
        std::fs::write(dir.join(".fleet/gcroots/pi"), "x").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join(".fleet/.gitignore"))
                .unwrap()
                .lines()
                .last(),
            Some("*")
        );
        assert_eq!(Provenance::now(dir).dirty, Some(false));
        // Even with the .gitignore gone, .fleet/ does not count.
        std::fs::remove_file(dir.join(".fleet/.gitignore")).unwrap();
        assert_eq!(Provenance::now(dir).dirty, Some(false));
        std::fs::write(dir.join("fleet.toml"), "# edited").unwrap();
        assert_eq!(Provenance::now(dir).dirty, Some(true));
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_647_599), "2026-11-25T22:59:59Z");
    }
}
