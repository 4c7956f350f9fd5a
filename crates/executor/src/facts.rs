//! What a host runs, read over its connection: the current, booted and profile systems, their
//! boot parts, the deployment package and what fleet recorded at the last apply. One
//! unprivileged command; the store questions (which paths are valid, a closure) go through
//! [`crate::store::StoreSession`].

use std::collections::BTreeSet;

use fleet_planner::RemoteState;
use fleet_types::{BootPart, BootSpec};
use serde::Serialize;

use crate::ssh::error::ExecError;
use crate::sudo::Privilege;
use crate::{Connection, Stdin};

/// Where fleet keeps its records of applies on a host: `<dir>/<toplevel basename>.json`, one per
/// system deployed, on `/nix` (writable with an immutable `/etc`, kept under impermanence).
pub const RECORDS_DIR: &str = "/nix/var/fleet/records";
/// Round 1's record, read only when it describes the running system.
pub const LEGACY_RECORD: &str = "/etc/nixos/fleet-deployment.json";
/// The deployment package link fleet leaves on a host.
pub const PACKAGE_LINK: &str = "/etc/nixos/current-configuration";
/// The Nix profile of the deployment packages (its generations follow the system's).
pub const PACKAGE_PROFILE: &str = "/nix/var/nix/profiles/fleet/deployment";

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
    /// The system the bootloader's default entry boots (systemd-boot or extlinux), resolved.
    pub boot_default: Option<String>,
    /// The bootloader fleet found: `systemd-boot` (one-time boot with `bootctl set-oneshot`)
    /// or `extlinux` (no one-time boot); `None` when neither.
    pub bootloader: Option<String>,
    /// The specialisation of the profile's system that runs, if any.
    pub specialisation: Option<String>,
    pub current_boot: BootSpec,
    pub booted_boot: BootSpec,
    pub profile_boot: BootSpec,
    /// `/etc/nixos/current-configuration`, resolved.
    pub package: Option<String>,
    /// What fleet recorded when it deployed the running system, if it did (parsed; `None` if
    /// absent or unreadable).
    pub deployment: Option<serde_json::Value>,
    /// The Nix system the host runs: its current system's `system` file, else `uname -m` as a
    /// double (`aarch64-linux`).
    pub system: Option<String>,
    /// The host runs systemd (`/run/systemd/system` exists).
    pub systemd: bool,
    /// `zstd` is on the host's PATH.
    pub zstd: bool,
    /// fleet's secrets manifest ([`crate::secrets::MANIFEST`]) exists (its folder is readable
    /// by all; the manifest itself may not be).
    pub secrets_manifest: bool,
    /// `MemAvailable` of `/proc/meminfo`, in bytes.
    pub mem_available: Option<u64>,
}

impl RemoteFacts {
    /// The parts of the boot chain that differ between the booted system and the one the next
    /// boot runs (the profile), as NixOS decides a reboot (`system.autoUpgrade`,
    /// nixos-needsreboot). Empty when either is unknown.
    pub fn reboot_parts(&self) -> Vec<BootPart> {
        if self.booted.is_none() || self.profile.is_none() {
            return Vec::new();
        }
        fleet_types::reboot_parts(&self.booted_boot, &self.profile_boot)
    }

    /// The planner's view of the host: these facts, with what its store said (`present`: the
    /// paths of the desired closure it has; `current_closure`: its current system's closure).
    pub fn remote_state(
        &self,
        present: BTreeSet<String>,
        current_closure: Vec<String>,
    ) -> RemoteState {
        RemoteState {
            current: self.current.clone(),
            booted: self.booted.clone(),
            generation: self.generation,
            profile: self.profile.clone(),
            boot_default: self.boot_default.clone(),
            specialisation: self.specialisation.clone(),
            current_closure,
            current_boot: self.current_boot.clone(),
            booted_boot: self.booted_boot.clone(),
            present,
            system: self.system.clone(),
            zstd: self.zstd,
            mem_available: self.mem_available,
            // What the CLI adds: the substituters' answer and the recorded flake lock.
            substitutable: None,
            flake: None,
        }
    }

    /// Whether the host needs a reboot to run its profile's boot chain.
    pub fn needs_reboot(&self) -> bool {
        !self.reboot_parts().is_empty()
    }
}

/// The facts script: POSIX sh, read-only, prints `key=value` lines. A missing or dangling link
/// prints nothing, which reads as "none" (`readlink -f` alone would print the path of a missing
/// last component). Every link is resolved by **one** `readlink -m` (one line per argument,
/// whatever happens to a path between the test and the call), and the rest uses shell
/// builtins: a `readlink` and a subshell per link (about 25 processes per host) were a quarter
/// of the machine's CPU time in a no-op apply of 50 simulated hosts (docs/performance.md).
const FACTS_SCRIPT: &str = r#"set --; keys=
# The default boot entry's system: systemd-boot (loader.conf -> entry -> init=), extlinux.
init=
if [ -r /boot/loader/loader.conf ]; then
  echo bootloader=systemd-boot
  while read -r k v _; do [ "$k" = default ] && e=$v; done < /boot/loader/loader.conf
  [ -n "${e-}" ] && [ -r "/boot/loader/entries/$e" ] && while read -r k v; do
    [ "$k" = options ] && for o in $v; do case $o in init=*) init=${o#init=};; esac; done
  done < "/boot/loader/entries/$e"
elif [ -r /boot/extlinux/extlinux.conf ]; then
  echo bootloader=extlinux
  d=; l=
  while read -r k v; do case $k in
    DEFAULT|default) d=$v;; LABEL|label) l=$v;;
    APPEND|append) [ "$l" = "$d" ] && for o in $v; do case $o in init=*) init=${o#init=};; esac; done;;
  esac; done < /boot/extlinux/extlinux.conf
fi
for s in current=/run/current-system booted=/run/booted-system profile=/nix/var/nix/profiles/system; do
  n=${s%%=*} p=${s#*=}
  for kp in "$n=$p" "$n.kernel=$p/kernel" "$n.initrd=$p/initrd" "$n.modules=$p/kernel-modules" \
    "$n.dtbs=$p/dtbs" "$n.firmware=$p/firmware"; do
    [ -e "${kp#*=}" ] && { set -- "$@" "${kp#*=}"; keys="$keys ${kp%%=*}"; }
  done
  for f in kernel-params init-interface-version; do
    [ -r "$p/$f" ] && { v=; while IFS= read -r l || [ -n "$l" ]; do v="$v$l"; done < "$p/$f"; echo "$n.$f=$v"; }
  done
done
[ -e /etc/nixos/current-configuration ] && { set -- "$@" /etc/nixos/current-configuration; keys="$keys package"; }
[ -n "$init" ] && [ -e "${init%/init}" ] && { set -- "$@" "${init%/init}"; keys="$keys boot_default"; }
for sp in /nix/var/nix/profiles/system/specialisation/*; do
  [ -e "$sp" ] && { set -- "$@" "$sp"; keys="$keys spec:${sp##*/}"; }
done
[ $# -gt 0 ] && readlink -m "$@" 2>/dev/null | for k in $keys; do read -r v; echo "$k=$v"; done
g=$(readlink /nix/var/nix/profiles/system 2>/dev/null); g=${g%-link}; echo "generation=${g##*-}"
{ read -r s < /run/current-system/system; } 2>/dev/null || s=$(uname -m)-linux; echo "system=$s"
[ -d /run/systemd/system ] && echo systemd=1
command -v zstd >/dev/null 2>&1 && echo zstd=1
[ -e /nix/var/fleet/secrets.json ] && echo secrets_manifest=1
while read -r k v _; do [ "$k" = MemAvailable: ] && echo "mem_available_kb=$v"; done < /proc/meminfo 2>/dev/null
c=$(readlink /run/current-system 2>/dev/null); c=${c##*/}
for r in "/nix/var/fleet/records/$c.json" /etc/nixos/fleet-deployment.json; do
  [ -n "$c" ] && [ -r "$r" ] || continue
  printf 'deployment='
  while IFS= read -r l || [ -n "$l" ]; do printf '%s' "$l"; done < "$r"
  echo; break
done
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
    let mut specialisations = Vec::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let some = || (!v.is_empty()).then(|| v.to_owned());
        if let Some((system, part)) = k.split_once('.') {
            let boot = match system {
                "current" => &mut f.current_boot,
                "booted" => &mut f.booted_boot,
                "profile" => &mut f.profile_boot,
                _ => continue,
            };
            let slot = match part {
                "kernel" => &mut boot.kernel,
                "initrd" => &mut boot.initrd,
                "modules" => &mut boot.modules,
                "dtbs" => &mut boot.dtbs,
                "firmware" => &mut boot.firmware,
                "kernel-params" => &mut boot.kernel_params,
                "init-interface-version" => &mut boot.init_interface,
                _ => continue,
            };
            *slot = some();
            continue;
        }
        if let Some(name) = k.strip_prefix("spec:") {
            specialisations.push((name.to_owned(), v.to_owned()));
            continue;
        }
        match k {
            "current" => f.current = some(),
            "booted" => f.booted = some(),
            "generation" => f.generation = v.parse().ok(),
            "profile" => f.profile = some(),
            "boot_default" => f.boot_default = some(),
            "bootloader" => f.bootloader = some(),
            "package" => f.package = some(),
            "system" => f.system = some(),
            "systemd" => f.systemd = v == "1",
            "zstd" => f.zstd = v == "1",
            "secrets_manifest" => f.secrets_manifest = v == "1",
            "mem_available_kb" => f.mem_available = v.parse::<u64>().ok().map(|kb| kb * 1024),
            "deployment" => f.deployment = serde_json::from_str(v).ok(),
            _ => {}
        }
    }
    // Booted into a specialisation of the profile's system (`--specialisation`, or picked in the
    // boot menu): the running system is one of them.
    f.specialisation = specialisations
        .into_iter()
        .find(|(_, path)| f.current.as_deref() == Some(path.as_str()))
        .map(|(name, _)| name);
    // A record describes what runs, or it is not shown (round 1's single record in /etc may
    // describe a deploy that was rolled back since).
    let describes = |d: &serde_json::Value| {
        let top = d.get("toplevel").and_then(serde_json::Value::as_str);
        top.is_some() && (top == f.current.as_deref() || top == f.profile.as_deref())
    };
    if !f.deployment.as_ref().is_some_and(describes) {
        f.deployment = None;
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
                    profile=/nix/store/a-sys\nprofile.kernel=/nix/store/k2\nprofile.initrd=/nix/store/i\n\
                    profile.modules=/nix/store/m\npackage=/nix/store/p\nzstd=1\nsecrets_manifest=1\nmem_available_kb=2048\n\
                    deployment={\"commit\": \"abc\", \"dirty\": false, \"toplevel\": \"/nix/store/a-sys\"}\nend=1\n";
        let f = parse_facts(text);
        assert_eq!(f.current.as_deref(), Some("/nix/store/a-sys"));
        assert_eq!(f.generation, Some(3));
        assert!(f.zstd && f.secrets_manifest && !f.systemd);
        assert_eq!(f.mem_available, Some(2048 * 1024));
        assert_eq!(f.deployment.as_ref().unwrap()["commit"], "abc");
        assert_eq!(f.reboot_parts(), [BootPart::Kernel]);
    }

    #[test]
    fn a_reboot_compares_the_booted_system_with_the_profile() {
        // `apply boot` of new kernel parameters: the running system is the booted one, the
        // profile differs only in its kernel-params.
        let text = "current=/nix/store/old\nbooted=/nix/store/old\nprofile=/nix/store/new\n\
                    booted.kernel=/nix/store/k\nprofile.kernel=/nix/store/k\n\
                    booted.kernel-params=loglevel=4\nprofile.kernel-params=loglevel=4 quiet\n\
                    current.kernel-params=loglevel=4\nend=1\n";
        let f = parse_facts(text);
        assert_eq!(f.reboot_parts(), [BootPart::KernelParams]);
        assert_eq!(
            f.profile_boot.kernel_params.as_deref(),
            Some("loglevel=4 quiet")
        );
    }

    #[test]
    fn a_running_specialisation_is_named() {
        let text = "current=/nix/store/s-gpu\nprofile=/nix/store/base\n\
                    spec:gpu=/nix/store/s-gpu\nspec:kiosk=/nix/store/s-kiosk\n\
                    boot_default=/nix/store/base\nbootloader=extlinux\nend=1\n";
        let f = parse_facts(text);
        assert_eq!(f.specialisation.as_deref(), Some("gpu"));
        assert_eq!(f.boot_default.as_deref(), Some("/nix/store/base"));
        assert_eq!(f.bootloader.as_deref(), Some("extlinux"));
        let f = parse_facts("current=/nix/store/base\nspec:gpu=/nix/store/s-gpu\nend=1\n");
        assert_eq!(f.specialisation, None);
    }

    #[test]
    fn the_planner_sees_the_facts_and_what_the_store_said() {
        let text = "current=/nix/store/s-gpu\ncurrent.kernel=/nix/store/k2\nbooted=/nix/store/b\n\
                    booted.kernel=/nix/store/k1\nprofile=/nix/store/base\ngeneration=7\n\
                    spec:gpu=/nix/store/s-gpu\nboot_default=/nix/store/base\n\
                    system=aarch64-linux\nend=1\n";
        let f = parse_facts(text);
        let present = BTreeSet::from(["/nix/store/p".to_owned()]);
        let s = f.remote_state(present.clone(), vec!["/nix/store/c".into()]);
        assert_eq!(s.current.as_deref(), Some("/nix/store/s-gpu"));
        assert_eq!(s.booted.as_deref(), Some("/nix/store/b"));
        assert_eq!(s.profile.as_deref(), Some("/nix/store/base"));
        assert_eq!(s.boot_default.as_deref(), Some("/nix/store/base"));
        assert_eq!(s.generation, Some(7));
        assert_eq!(s.specialisation.as_deref(), Some("gpu"));
        assert_eq!(s.system.as_deref(), Some("aarch64-linux"));
        assert_eq!(s.current_boot.kernel.as_deref(), Some("/nix/store/k2"));
        assert_eq!(s.booted_boot.kernel.as_deref(), Some("/nix/store/k1"));
        assert_eq!(s.present, present);
        assert_eq!(s.current_closure, ["/nix/store/c"]);
    }

    #[test]
    fn the_script_is_valid_sh() {
        crate::quote::assert_posix_sh(FACTS_SCRIPT);
    }
}
