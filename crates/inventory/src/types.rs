//! The typed inventory: what a valid `fleet.toml` means once defaults are applied.

use std::collections::BTreeMap;
use std::time::Duration;

use camino::Utf8PathBuf;
use serde::{Deserialize, Serialize};

// Host names and systems are the vocabulary crate's; re-exported as part of this crate's API.
pub(crate) use fleet_types::host_name_problem;
pub use fleet_types::{HostName, InvalidName, System, LINUX_SYSTEMS};

/// A parsed, validated `fleet.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Pinned nixpkgs sources, by name.
    pub pins: BTreeMap<String, Pin>,
    /// Hosts in the order they appear in the file.
    pub hosts: Vec<Host>,
    /// `[secrets.NAME]`: files uploaded to hosts outside the Nix store, in file order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<Secret>,
    /// `[build]`: remote builders for this run's builds.
    #[serde(default, skip_serializing_if = "BuildSettings::is_empty")]
    pub build: BuildSettings,
}

/// `[build]` (docs/scale.md): Nix remote builders, passed to the deployer's Nix for fleet's
/// runs only (never written to nix.conf).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BuildSettings {
    /// `builders`: one machine line each, checked.
    pub builders: Vec<Builder>,
    /// `builders-use-substitutes`: builders fetch inputs from their own substituters.
    pub builders_use_substitutes: bool,
}

impl BuildSettings {
    /// Nothing set.
    pub fn is_empty(&self) -> bool {
        self.builders.is_empty() && !self.builders_use_substitutes
    }
}

/// One remote builder, a line of Nix's machine format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Builder {
    /// `ssh://[USER@]HOST[?ssh-key=...]` or `ssh-ng://...`.
    pub uri: String,
    /// Systems it builds; empty: the deployer's own (Nix's `-`).
    pub systems: Vec<System>,
    pub ssh_key: Option<String>,
    pub max_jobs: Option<u32>,
    pub speed_factor: Option<u32>,
    pub supported_features: Vec<String>,
    pub mandatory_features: Vec<String>,
    /// The builder's SSH host key line, base64-encoded (Nix's 8th field).
    pub host_key: Option<String>,
}

impl Builder {
    /// The line for Nix's `builders` setting, every field written (`-` for defaults).
    pub fn machine_line(&self) -> String {
        let dash = |s: Option<String>| s.unwrap_or_else(|| "-".into());
        let list = |v: &[String]| (!v.is_empty()).then(|| v.join(","));
        let systems: Vec<String> = self.systems.iter().map(|s| s.to_string()).collect();
        [
            self.uri.clone(),
            dash(list(&systems)),
            dash(self.ssh_key.clone()),
            dash(self.max_jobs.map(|n| n.to_string())),
            dash(self.speed_factor.map(|n| n.to_string())),
            dash(list(&self.supported_features)),
            dash(list(&self.mandatory_features)),
            dash(self.host_key.clone()),
        ]
        .join(" ")
    }
}

impl Inventory {
    /// The host called `name`, if there is one.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name.as_str() == name)
    }

    /// All tags used by any host, sorted, without duplicates.
    pub fn tags(&self) -> Vec<&str> {
        let mut tags: Vec<&str> = self
            .hosts
            .iter()
            .flat_map(|h| h.tags.iter().map(String::as_str))
            .collect();
        tags.sort_unstable();
        tags.dedup();
        tags
    }
}

/// A secret: where its content comes from on the deployer and where it goes on hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Secret {
    pub name: String,
    pub source: SecretSource,
    /// Absolute, normalised path on the host (default `/run/keys/NAME`).
    pub dest: Utf8PathBuf,
    pub owner: String,
    pub group: String,
    /// Permission bits, e.g. `0o400`.
    pub mode: u32,
    /// A host selector like `--on` (`None`: every host); checked against the hosts.
    pub hosts: Option<String>,
    pub when: SecretWhen,
}

/// Where a secret's content comes from, on the deployer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretSource {
    /// A file, absolute (fleet.toml's folder joined with what was written).
    File(Utf8PathBuf),
    /// A command run with `sh -c` in fleet.toml's folder; its standard output is the content.
    Command(String),
}

/// When a secret is uploaded relative to the activation of the host's new system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretWhen {
    BeforeActivation,
    AfterActivation,
}

impl SecretWhen {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretWhen::BeforeActivation => "before-activation",
            SecretWhen::AfterActivation => "after-activation",
        }
    }
}

impl Inventory {
    /// The secrets that go to `host`, in file order.
    pub fn secrets_for(&self, host: &str) -> Vec<&Secret> {
        self.secrets
            .iter()
            .filter(|s| match &s.hosts {
                None => true,
                Some(sel) => self
                    .select(Some(sel))
                    .map(|hs| hs.iter().any(|h| h.name.as_str() == host))
                    .unwrap_or(false),
            })
            .collect()
    }
}

/// A pinned nixpkgs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub name: String,
    pub source: PinSource,
}

/// Where a pin's nixpkgs comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PinSource {
    /// A tarball fetched with `builtins.fetchTarball { url; sha256; }`.
    Tarball { url: String, sha256: String },
    /// A local checkout; absolute (the file's directory joined with what was written).
    Path(Utf8PathBuf),
}

/// One machine, with every setting resolved (host value, else `[defaults]`, else built-in default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Host {
    pub name: HostName,
    pub address: String,
    pub user: String,
    pub port: u16,
    pub system: System,
    /// Where the host's system comes from: a pin and a `configuration.nix`, or a flake.
    #[serde(flatten)]
    pub source: HostSource,
    pub tags: Vec<String>,
    pub sudo: SudoMode,
    pub build: BuildMode,
    /// Pinned host key, normalised to `<type> <base64>` (no comment).
    pub host_key: Option<String>,
    pub identity_file: Option<Utf8PathBuf>,
    pub known_hosts: Option<Utf8PathBuf>,
    /// How long `fleet apply` waits for the host to confirm before rolling back.
    #[serde(with = "duration_secs")]
    pub confirm_timeout: Duration,
    /// Further `<name>` entries of the host's evaluation search path (`nix-path`, absolute
    /// paths), `[defaults]` merged with the host's own. `<nixpkgs>` and `<nixos-config>` are
    /// always the pin and the configuration.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nix_path: BTreeMap<String, Utf8PathBuf>,
    /// Health checks run after activation, before confirmation (`checks`); `None`: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<HealthChecks>,
    /// `substitute`: the host first fetches what it lacks from its own substituters
    /// (`nix-copy-closure --use-substitutes`); fleet copies only the rest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub substitute: bool,
    /// `relay`: the fleet host that forwards this host's copy over its LAN (docs/relay.md).
    /// Checked: a host of the file, not this one, not relayed itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<HostName>,
    /// Which connection settings fleet.toml gives this host (in its table or in `[defaults]`).
    /// The others are defaults that `~/.ssh/config` may override.
    #[serde(skip)]
    pub set_in_file: SetInFile,
}

/// Where a host's system comes from (serialised flat: `pin` + `config`, or `flake`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HostSource {
    /// `pin` + `config`: `import "${pin}/nixos" { configuration = config; }`.
    Pinned {
        pin: String,
        /// Absolute path of the host's `configuration.nix`.
        config: Utf8PathBuf,
    },
    /// `flake = "REF#ATTR"`: the flake's `nixosConfigurations.ATTR`.
    Flake { flake: Flake },
}

/// A host's flake (`flake = "REF"` or `"REF#ATTR"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Flake {
    /// The flake reference as Nix takes it, without `#ATTR`; a relative path (`.`, `./x`,
    /// `path:./x`) is made absolute against fleet.toml's folder.
    pub reference: String,
    /// The attribute of `nixosConfigurations`: what followed `#`, else the host's name.
    pub attribute: String,
    /// Evaluate with `--impure` (`impure = true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub impure: bool,
}

impl Host {
    /// The host's pin, when it is not a flake host.
    pub fn pin(&self) -> Option<&str> {
        match &self.source {
            HostSource::Pinned { pin, .. } => Some(pin),
            HostSource::Flake { .. } => None,
        }
    }

    /// The host's `configuration.nix`, when it is not a flake host.
    pub fn config(&self) -> Option<&Utf8PathBuf> {
        match &self.source {
            HostSource::Pinned { config, .. } => Some(config),
            HostSource::Flake { .. } => None,
        }
    }

    /// The host's flake, when it is a flake host.
    pub fn flake(&self) -> Option<&Flake> {
        match &self.source {
            HostSource::Flake { flake } => Some(flake),
            HostSource::Pinned { .. } => None,
        }
    }
}

/// Which of `address`, `user` and `port` a host's settings in fleet.toml name explicitly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SetInFile {
    pub address: bool,
    pub user: bool,
    pub port: bool,
}

/// How fleet gains root on a host whose `user` is not root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SudoMode {
    /// No sudo: the user is root.
    None,
    /// `sudo -n`: the user may run sudo without a password.
    Passwordless,
    /// `sudo -S`: fleet asks for the password once and feeds it on stdin.
    Password,
}

impl SudoMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SudoMode::None => "none",
            SudoMode::Passwordless => "passwordless",
            SudoMode::Password => "password",
        }
    }
}

/// How a host's system is built on the deployer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BuildMode {
    /// Built for the host's system natively, or emulated (binfmt) or on a remote builder.
    Local,
    /// Cross-compiled from the deployer's system.
    Cross,
}

impl BuildMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildMode::Local => "local",
            BuildMode::Cross => "cross",
        }
    }
}

/// `Duration` as whole seconds in serialised form (`"confirm-timeout": 30`).
mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_follow_dns_label_rules() {
        assert!(HostName::new("pi1").is_ok());
        assert!(HostName::new("web-01").is_ok());
        assert!(HostName::new("a".repeat(63)).is_ok());
        assert!(HostName::new("a".repeat(64)).is_err());
        assert!(HostName::new("").is_err());
        assert!(HostName::new("-pi").is_err());
        assert!(HostName::new("pi-").is_err());
        assert!(HostName::new("pi_1").is_err());
        assert!(HostName::new("pi.lan").is_err());
    }

    #[test]
    fn systems_are_linux_doubles() {
        assert_eq!(
            System::new("aarch64-linux").unwrap().as_str(),
            "aarch64-linux"
        );
        assert!(System::new("aarch64-darwin").is_err());
        assert!(System::new("arm64-linux").is_err());
    }

    #[test]
    fn host_names_deserialize_checked() {
        let ok: Result<HostName, _> = serde_json::from_str("\"pi1\"");
        assert!(ok.is_ok());
    }
}

/// A host's health checks (`[hosts.NAME.checks]` merged over `[defaults.checks]`, key by key):
/// run after activation and before confirmation; a failing one rolls the host back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct HealthChecks {
    /// systemd units that must be active (`systemctl is-active`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<String>,
    /// `HOST:PORT` addresses, as seen from the host, that must accept a TCP connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<String>,
    /// `http://` URLs, as seen from the host, that must answer 2xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<String>,
    /// Shell commands run as root on the host that must exit 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
    /// How long all of them together may take to pass (retried with back-off).
    #[serde(with = "duration_secs")]
    pub timeout: Duration,
}

impl HealthChecks {
    /// No check at all.
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
            && self.tcp.is_empty()
            && self.http.is_empty()
            && self.commands.is_empty()
    }

    /// How many checks there are.
    pub fn len(&self) -> usize {
        self.units.len() + self.tcp.len() + self.http.len() + self.commands.len()
    }
}
