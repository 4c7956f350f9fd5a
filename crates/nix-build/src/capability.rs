//! Can this machine build a given system? (native, `extra-platforms`, or `builders`)

use crate::error::{BuildError, CannotBuild};
use crate::nix;

/// What the local Nix can build, from `nix show-config --json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixCapabilities {
    /// The native system (`system` setting, = `builtins.currentSystem`).
    pub native: String,
    pub extra_platforms: Vec<String>,
    /// Systems offered by remote builders (`builders`, including `@file` lists).
    pub builder_systems: Vec<String>,
    /// The remote builders: (store URI, systems), in the order Nix was given them.
    pub builders: Vec<(String, Vec<String>)>,
}

/// Where the derivations of a system get built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildRoute {
    /// This machine's own system.
    Native,
    /// A remote builder that offers the system (its store URI; Nix picks among all that
    /// offer it, by free slots and speed factor).
    Builder(String),
    /// This machine, by emulation (`extra-platforms`).
    Emulated,
}

impl std::fmt::Display for BuildRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildRoute::Native => f.write_str("on this machine"),
            BuildRoute::Builder(uri) => write!(f, "on remote builder {uri}"),
            BuildRoute::Emulated => f.write_str("on this machine, emulated (extra-platforms)"),
        }
    }
}

impl NixCapabilities {
    /// Ask the local Nix (one process) with the given extra environment (e.g. `NIX_CONFIG`).
    pub async fn query(nix_env: &[(String, String)]) -> Result<Self, BuildError> {
        let args: Vec<String> = [
            "show-config",
            "--json",
            "--extra-experimental-features",
            "nix-command",
        ]
        .map(String::from)
        .to_vec();
        let out = nix::run("nix", &args, nix_env).await?;
        if !out.success {
            return Err(BuildError::Nix {
                command: nix::display("nix", &args),
                status: out.status,
                stderr: nix::excerpt(&out.stderr),
            });
        }
        let bad = |detail: String| BuildError::Output {
            command: nix::display("nix", &args),
            detail,
        };
        let json: serde_json::Value =
            serde_json::from_str(&out.stdout).map_err(|e| bad(e.to_string()))?;
        let value = |key: &str| json.get(key).and_then(|v| v.get("value"));
        let native = value("system")
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad("no `system` setting".into()))?
            .to_owned();
        let extra_platforms = match value("extra-platforms") {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            Some(serde_json::Value::String(s)) => s.split_whitespace().map(String::from).collect(),
            _ => Vec::new(),
        };
        let builders = value("builders")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let builders = machines(&builders, &native);
        let mut builder_systems: Vec<String> =
            builders.iter().flat_map(|(_, s)| s.clone()).collect();
        builder_systems.sort();
        builder_systems.dedup();
        Ok(Self {
            native,
            extra_platforms,
            builder_systems,
            builders,
        })
    }

    /// Where `system`'s derivations get built, if anywhere: a remote builder that offers it
    /// comes before emulation, as in Nix (its build hook takes a derivation whenever a
    /// machine of its system has a free slot).
    pub fn route(&self, system: &str) -> Option<BuildRoute> {
        if system == self.native {
            return Some(BuildRoute::Native);
        }
        let all: Vec<&str> = self
            .builders
            .iter()
            .filter(|(_, s)| s.iter().any(|s| s == system))
            .map(|(uri, _)| uri.as_str())
            .collect();
        if !all.is_empty() {
            return Some(BuildRoute::Builder(all.join(", ")));
        }
        self.extra_platforms
            .iter()
            .any(|s| s == system)
            .then_some(BuildRoute::Emulated)
    }

    /// `Ok` when `system` can be built here (natively, by emulation, or by a remote builder).
    pub fn check(&self, system: &str) -> Result<(), CannotBuild> {
        if system == self.native
            || self.extra_platforms.iter().any(|s| s == system)
            || self.builder_systems.iter().any(|s| s == system)
        {
            return Ok(());
        }
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(" ")
            }
        };
        Err(CannotBuild {
            system: system.to_owned(),
            native: self.native.clone(),
            reason: format!(
                "it is not the native system, not in extra-platforms ({}) and no remote builder offers it (builders: {})",
                list(&self.extra_platforms),
                list(&self.builder_systems)
            ),
            remedies: remedies(system, &self.native),
        })
    }
}

/// The remedies shown when `system` cannot be built on a `native` machine.
pub fn remedies(system: &str, native: &str) -> Vec<String> {
    vec![
        format!(
            "on a NixOS deployer, enable emulation: boot.binfmt.emulatedSystems = [ \"{system}\" ]; (then nixos-rebuild switch)"
        ),
        format!(
            "elsewhere, register qemu-user with binfmt_misc (e.g. apt install qemu-user-static binfmt-support) and add `extra-platforms = {system}` to /etc/nix/nix.conf (or NIX_CONFIG), then restart nix-daemon"
        ),
        format!(
            "use a remote builder for {system}: `builders = ssh://user@builder {system}` in nix.conf (or /etc/nix/machines)"
        ),
        format!(
            "cross-compile on this {native} machine: set `build = \"cross\"` for the host in fleet.toml"
        ),
    ]
}

/// The machines of a `builders` setting: `;`- or newline-separated machine lines
/// `uri [systems[,…]] …`, or `@file` to read them from a file. A missing system list is the
/// deployer's own.
fn machines(builders: &str, native: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for spec in builders.split([';', '\n']) {
        let spec = spec.trim();
        if let Some(file) = spec.strip_prefix('@') {
            if let Ok(text) = std::fs::read_to_string(file.trim()) {
                out.extend(machines(&text, native));
            }
            continue;
        }
        if spec.is_empty() || spec.starts_with('#') {
            continue;
        }
        let mut fields = spec.split_whitespace();
        let uri = fields.next().unwrap_or_default().to_owned();
        let systems = match fields.next() {
            Some("-") | None => vec![native.to_owned()],
            Some(systems) => systems.split(',').map(String::from).collect(),
        };
        out.push((uri, systems));
    }
    out
}

/// Can this machine build `system`? Asks the local Nix with `nix_env` (one process).
pub async fn check_can_build(system: &str, nix_env: &[(String, String)]) -> Result<(), BuildError> {
    NixCapabilities::query(nix_env)
        .await?
        .check(system)
        .map_err(BuildError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_lines() {
        let m = machines(
            "ssh://a aarch64-linux,armv7l-linux /k 4; ssh://b - ; ssh://c",
            "x86_64-linux",
        );
        let names: Vec<&str> = m.iter().map(|(u, _)| u.as_str()).collect();
        assert_eq!(names, vec!["ssh://a", "ssh://b", "ssh://c"]);
        assert_eq!(m[0].1, vec!["aarch64-linux", "armv7l-linux"]);
        assert_eq!(m[1].1, vec!["x86_64-linux"]);
        assert!(machines("@/nonexistent/machines", "x86_64-linux").is_empty());
    }

    #[test]
    fn a_builder_comes_before_emulation_and_is_named() {
        let caps = NixCapabilities {
            native: "x86_64-linux".into(),
            extra_platforms: vec!["aarch64-linux".into(), "armv7l-linux".into()],
            builder_systems: vec!["aarch64-linux".into()],
            builders: vec![
                ("ssh-ng://root@arm".into(), vec!["aarch64-linux".into()]),
                ("ssh://x86".into(), vec!["x86_64-linux".into()]),
            ],
        };
        assert_eq!(caps.route("x86_64-linux"), Some(BuildRoute::Native));
        assert_eq!(
            caps.route("aarch64-linux"),
            Some(BuildRoute::Builder("ssh-ng://root@arm".into()))
        );
        assert_eq!(caps.route("armv7l-linux"), Some(BuildRoute::Emulated));
        assert_eq!(caps.route("riscv64-linux"), None);
        assert_eq!(
            caps.route("aarch64-linux").unwrap().to_string(),
            "on remote builder ssh-ng://root@arm"
        );
    }

    #[test]
    fn remedies_name_all_four_ways() {
        let caps = NixCapabilities {
            native: "x86_64-linux".into(),
            extra_platforms: vec![],
            builder_systems: vec![],
            builders: vec![],
        };
        let e = caps.check("aarch64-linux").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("boot.binfmt.emulatedSystems = [ \"aarch64-linux\" ]"));
        assert!(text.contains("extra-platforms = aarch64-linux"));
        assert!(text.contains("builders = ssh://"));
        assert!(text.contains("build = \"cross\""));
        assert!(caps.check("x86_64-linux").is_ok());
    }
}
