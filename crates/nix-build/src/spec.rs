//! Inputs and outputs of a build: what the CLI hands over and what comes back.

use std::sync::Arc;

use camino::Utf8PathBuf;
use fleet_types::BootSpec;
use serde::{Deserialize, Serialize};

/// Where a host's nixpkgs comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PinSpec {
    /// `builtins.fetchTarball { url; sha256; }` (`sha256` in the nix32 form
    /// `nix-prefetch-url --unpack` prints).
    Tarball { url: String, sha256: String },
    /// A local checkout, copied to the store as `builtins.path { path; name = "source"; }`.
    Path(Utf8PathBuf),
}

/// One host to evaluate and build. The CLI maps an inventory host to this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostBuildSpec {
    /// The host's name in the inventory (used for GC roots and results, never in derivations).
    pub name: String,
    /// Nix system of the host, e.g. `aarch64-linux`.
    pub system: String,
    pub pin: PinSpec,
    /// The host's configuration file (absolute, or relative to the current directory). Its
    /// folder goes into the deployment package.
    pub config: Utf8PathBuf,
    /// Cross-compile on this machine instead of building for `system` natively
    /// (`nixpkgs.buildPlatform = builtins.currentSystem; nixpkgs.hostPlatform = system;`).
    pub cross: bool,
    /// Further entries of the evaluation's search path (`nix-path` in fleet.toml): name →
    /// absolute path, e.g. `nixos-hardware` → a checkout. `nixpkgs` (the pin) and
    /// `nixos-config` (the configuration) are always there; nothing else is.
    #[serde(default)]
    pub nix_path: Vec<(String, Utf8PathBuf)>,
    /// The host's system comes from this flake's `nixosConfigurations` (then `pin`, `config`,
    /// `cross` and `nix_path` are not used).
    #[serde(default)]
    pub flake: Option<FlakeSpec>,
}

/// A flake host: `nixosConfigurations.<attribute>` of the flake `reference`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlakeSpec {
    /// A flake reference Nix accepts (`/abs/dir`, `path:…`, `git+file:…`, `github:…`), no `#`.
    pub reference: String,
    pub attribute: String,
    /// Evaluate with `--impure`.
    #[serde(default)]
    pub impure: bool,
}

pub use fleet_types::{FlakeLock, LockedInput};

/// Progress of [`crate::evaluate_and_build`], handed to [`BuildOptions::on_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// One Nix process started evaluating these hosts.
    EvalStarted { hosts: Vec<String> },
    /// These hosts' inputs did not change since their last evaluation: its result is reused
    /// (the evaluation cache), no Nix process evaluates them.
    EvalCached { hosts: Vec<String> },
    /// Evaluating these hosts in one process went past the memory limit (bytes): they are
    /// evaluated in smaller groups, and so are the batches after them.
    EvalSplit { hosts: Vec<String>, limit: u64 },
    /// A batch failed as a whole; its hosts are evaluated one by one to find the culprit.
    EvalBatchFailed { hosts: Vec<String> },
    /// Something the user should know about a host that does not stop it (a path its
    /// configuration reads on this machine but that is not in the deployment package).
    Warning { host: String, message: String },
    /// Evaluation of these hosts finished (`failed` is a subset of `hosts`).
    EvalFinished {
        hosts: Vec<String>,
        failed: Vec<String>,
    },
    /// Where a host's system gets built, when it is not this machine's own (the plan-time
    /// capability check's answer: a remote builder, or emulation).
    BuildRoute {
        host: String,
        system: String,
        route: crate::capability::BuildRoute,
    },
    /// A build of these hosts' packages started: one per round of the streamed build (hosts
    /// are built as their evaluation returns; a round whose packages are all valid already
    /// runs no `nix-store --realise`).
    BuildStarted { hosts: Vec<String> },
    /// Nix started building this derivation.
    Building { drv: String },
    /// That round finished; `built` lists the derivations that were actually built.
    BuildFinished {
        built: Vec<String>,
        failed_hosts: Vec<String>,
    },
}

/// A progress callback. The library never prints.
pub type EventSink = Arc<dyn Fn(BuildEvent) + Send + Sync>;

/// How to run Nix.
#[derive(Clone)]
pub struct BuildOptions {
    /// The folder of `fleet.toml`: GC roots go to `<fleet_dir>/.fleet/gcroots/<host>`.
    pub fleet_dir: Utf8PathBuf,
    /// Every host's configuration file in fleet.toml (absolute), not only those being built:
    /// a host's package never holds another host's files. Empty: the specs' own.
    pub all_configs: Vec<Utf8PathBuf>,
    /// Extra environment for every Nix process (e.g. `NIX_CONFIG`).
    pub nix_env: Vec<(String, String)>,
    /// At most this many hosts per `nix-instantiate` process (≥ 1).
    pub max_hosts_per_eval: usize,
    /// At most this many Nix evaluation processes at once (≥ 1).
    pub max_parallel_evals: usize,
    /// Resident memory one Nix evaluation process may use, in bytes: a process that grows past
    /// it is stopped and its hosts are evaluated in smaller groups (`None`: no limit).
    pub eval_max_memory: Option<u64>,
    /// Reuse the last evaluation of hosts whose inputs did not change (`.fleet/eval-cache.json`).
    pub eval_cache: bool,
    pub on_event: Option<EventSink>,
}

impl BuildOptions {
    pub fn new(fleet_dir: impl Into<Utf8PathBuf>) -> Self {
        Self {
            fleet_dir: fleet_dir.into(),
            all_configs: Vec::new(),
            nix_env: Vec::new(),
            max_hosts_per_eval: 32,
            max_parallel_evals: 2,
            eval_max_memory: None,
            eval_cache: false,
            on_event: None,
        }
    }

    pub(crate) fn emit(&self, event: BuildEvent) {
        if let Some(sink) = &self.on_event {
            sink(event);
        }
    }
}

impl std::fmt::Debug for BuildOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildOptions")
            .field("fleet_dir", &self.fleet_dir)
            .field("all_configs", &self.all_configs)
            .field("nix_env", &self.nix_env)
            .field("max_hosts_per_eval", &self.max_hosts_per_eval)
            .field("max_parallel_evals", &self.max_parallel_evals)
            .field("on_event", &self.on_event.as_ref().map(|_| "<callback>"))
            .finish()
    }
}

/// A host that evaluated and built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltHost {
    /// `config.system.build.toplevel` (output path).
    pub toplevel: String,
    /// The deployment package (output path); it refers to the toplevel.
    pub package: String,
    pub toplevel_drv: String,
    pub package_drv: String,
    /// The GC root that keeps `package` alive: `<fleet_dir>/.fleet/gcroots/<host>`.
    pub gc_root: Utf8PathBuf,
    pub boot: BootSpec,
    /// A flake host's lock.
    #[serde(default)]
    pub flake: Option<FlakeLock>,
}
