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
        let builder_systems = builder_systems(&builders, &native);
        Ok(Self {
            native,
            extra_platforms,
            builder_systems,
        })
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

/// Systems listed by a `builders` setting: `;`- or newline-separated machine lines
/// `uri [systems[,…]] …`, or `@file` to read them from a file.
fn builder_systems(builders: &str, native: &str) -> Vec<String> {
    let mut out = Vec::new();
    for spec in builders.split([';', '\n']) {
        let spec = spec.trim();
        if let Some(file) = spec.strip_prefix('@') {
            if let Ok(text) = std::fs::read_to_string(file.trim()) {
                out.extend(builder_systems(&text, native));
            }
            continue;
        }
        if spec.is_empty() || spec.starts_with('#') {
            continue;
        }
        let mut fields = spec.split_whitespace();
        let _uri = fields.next();
        match fields.next() {
            Some("-") | None => out.push(native.to_owned()),
            Some(systems) => out.extend(systems.split(',').map(String::from)),
        }
    }
    out.sort();
    out.dedup();
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
        assert_eq!(
            builder_systems(
                "ssh://a aarch64-linux,armv7l-linux /k 4; ssh://b - ; ssh://c",
                "x86_64-linux"
            ),
            vec!["aarch64-linux", "armv7l-linux", "x86_64-linux"]
        );
        assert!(builder_systems("@/nonexistent/machines", "x86_64-linux").is_empty());
    }

    #[test]
    fn remedies_name_all_four_ways() {
        let caps = NixCapabilities {
            native: "x86_64-linux".into(),
            extra_platforms: vec![],
            builder_systems: vec![],
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
