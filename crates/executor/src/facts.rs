//! What a host runs, read over its connection: the current, booted and profile systems, their
//! boot parts, the deployment package and what fleet recorded at the last apply. One
//! unprivileged command; the store questions (which paths are valid, a closure) go through
//! [`crate::store::StoreSession`].

use serde::Serialize;

use crate::ssh::error::ExecError;
use crate::sudo::Privilege;
use crate::{Connection, Stdin};

/// Where fleet keeps its record of the last apply on a host.
pub const DEPLOYMENT_RECORD: &str = "/etc/nixos/fleet-deployment.json";
/// The deployment package link fleet leaves on a host.
pub const PACKAGE_LINK: &str = "/etc/nixos/current-configuration";

/// The store paths a system's `kernel`, `initrd` and `kernel-modules` links point at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BootLinks {
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub modules: Option<String>,
}

/// A host's state as read by [`read_facts`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RemoteFacts {
    /// `/run/current-system`, resolved.
    pub current: Option<String>,
    /// `/run/booted-system`, resolved.
    pub booted: Option<String>,
    /// The system profile's generation number.
    pub generation: Option<u64>,
    /// What the system profile points at (the next boot's system).
    pub profile: Option<String>,
    pub current_boot: BootLinks,
    pub booted_boot: BootLinks,
    /// `/etc/nixos/current-configuration`, resolved.
    pub package: Option<String>,
    /// The JSON fleet recorded at the last apply, if any (parsed; `None` if absent or unreadable).
    pub deployment: Option<serde_json::Value>,
    /// The Nix system the host runs: its current system's `system` file, else `uname -m` as a
    /// double (`aarch64-linux`).
    pub system: Option<String>,
    /// The host runs systemd (`/run/systemd/system` exists).
    pub systemd: bool,
    /// `zstd` is on the host's PATH.
    pub zstd: bool,
    /// `MemAvailable` of `/proc/meminfo`, in bytes.
    pub mem_available: Option<u64>,
}

impl RemoteFacts {
    /// The booted kernel (or initrd, or modules) differs from the current system's.
    pub fn needs_reboot(&self) -> bool {
        self.booted.is_some()
            && self.current.is_some()
            && (self.current_boot.kernel != self.booted_boot.kernel
                || self.current_boot.initrd != self.booted_boot.initrd
                || self.current_boot.modules != self.booted_boot.modules)
    }
}

/// The facts script: POSIX sh, read-only, prints `key=value` lines. A missing or dangling link
/// prints nothing, which reads as "none" (`readlink -f` alone would print the path of a missing
/// last component). Every link is resolved by **one** `readlink -m` (one line per argument,
/// whatever happens to a path between the test and the call), and the rest uses shell
/// builtins: a `readlink` and a subshell per link (about 25 processes per host) were a quarter
/// of the machine's CPU time in a no-op apply of 50 simulated hosts (docs/performance.md).
const FACTS_SCRIPT: &str = r#"set --; keys=
for kp in current=/run/current-system current.kernel=/run/current-system/kernel \
  current.initrd=/run/current-system/initrd current.modules=/run/current-system/kernel-modules \
  booted=/run/booted-system booted.kernel=/run/booted-system/kernel \
  booted.initrd=/run/booted-system/initrd booted.modules=/run/booted-system/kernel-modules \
  profile=/nix/var/nix/profiles/system package=/etc/nixos/current-configuration; do
  [ -e "${kp#*=}" ] && { set -- "$@" "${kp#*=}"; keys="$keys ${kp%%=*}"; }
done
[ $# -gt 0 ] && readlink -m "$@" 2>/dev/null | for k in $keys; do read -r v; echo "$k=$v"; done
g=$(readlink /nix/var/nix/profiles/system 2>/dev/null); g=${g#system-}; echo "generation=${g%-link}"
{ read -r s < /run/current-system/system; } 2>/dev/null || s=$(uname -m)-linux; echo "system=$s"
[ -d /run/systemd/system ] && echo systemd=1
command -v zstd >/dev/null 2>&1 && echo zstd=1
while read -r k v _; do [ "$k" = MemAvailable: ] && echo "mem_available_kb=$v"; done < /proc/meminfo 2>/dev/null
if [ -r /etc/nixos/fleet-deployment.json ]; then
  printf 'deployment='
  while IFS= read -r l || [ -n "$l" ]; do printf '%s' "$l"; done < /etc/nixos/fleet-deployment.json
  echo
fi
echo end=1
"#;

/// Why facts could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("reading the state of {host} failed (exit {status:?}): {stderr}")]
    Failed {
        host: String,
        status: Option<u32>,
        stderr: String,
    },
}

/// Reads a host's state with one command, as the login user (nothing here needs root).
pub async fn read_facts(conn: &Connection) -> Result<RemoteFacts, FactsError> {
    let cmd = format!("sh -c {}", crate::quote(FACTS_SCRIPT));
    let out = conn.exec(&cmd, &Privilege::None, Stdin::None).await?;
    let text = out.stdout_lossy();
    if !out.success() || !text.lines().any(|l| l == "end=1") {
        return Err(FactsError::Failed {
            host: conn.name().to_owned(),
            status: out.status,
            stderr: out.stderr_lossy().trim().to_owned(),
        });
    }
    Ok(parse_facts(&text))
}

fn parse_facts(text: &str) -> RemoteFacts {
    let mut f = RemoteFacts::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let some = || (!v.is_empty()).then(|| v.to_owned());
        match k {
            "current" => f.current = some(),
            "booted" => f.booted = some(),
            "current.kernel" => f.current_boot.kernel = some(),
            "current.initrd" => f.current_boot.initrd = some(),
            "current.modules" => f.current_boot.modules = some(),
            "booted.kernel" => f.booted_boot.kernel = some(),
            "booted.initrd" => f.booted_boot.initrd = some(),
            "booted.modules" => f.booted_boot.modules = some(),
            "generation" => f.generation = v.parse().ok(),
            "profile" => f.profile = some(),
            "package" => f.package = some(),
            "system" => f.system = some(),
            "systemd" => f.systemd = v == "1",
            "zstd" => f.zstd = v == "1",
            "mem_available_kb" => f.mem_available = v.parse::<u64>().ok().map(|kb| kb * 1024),
            "deployment" => f.deployment = serde_json::from_str(v).ok(),
            _ => {}
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_fresh_host() {
        let f = parse_facts("current=\nbooted=\ngeneration=\nprofile=\npackage=\nend=1\n");
        assert_eq!(f, RemoteFacts::default());
        assert!(!f.needs_reboot());
    }

    #[test]
    fn parses_a_running_host_and_sees_a_pending_reboot() {
        let text = "current=/nix/store/a-sys\ncurrent.kernel=/nix/store/k2\ncurrent.initrd=/nix/store/i\n\
                    current.modules=/nix/store/m\nbooted=/nix/store/b-sys\nbooted.kernel=/nix/store/k1\n\
                    booted.initrd=/nix/store/i\nbooted.modules=/nix/store/m\ngeneration=3\n\
                    profile=/nix/store/a-sys\npackage=/nix/store/p\nzstd=1\nmem_available_kb=2048\n\
                    deployment={\"commit\": \"abc\", \"dirty\": false}\nend=1\n";
        let f = parse_facts(text);
        assert_eq!(f.current.as_deref(), Some("/nix/store/a-sys"));
        assert_eq!(f.generation, Some(3));
        assert!(f.zstd && !f.systemd);
        assert_eq!(f.mem_available, Some(2048 * 1024));
        assert_eq!(f.deployment.as_ref().unwrap()["commit"], "abc");
        assert!(f.needs_reboot());
    }
}
