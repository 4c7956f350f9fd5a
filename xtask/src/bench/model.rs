//! What a bench run is made of: its scale, the hosts' variant, the tools compared, and what
//! each run measured.

use std::time::Duration;

use super::report;

/// How big a run is.
#[derive(Debug, Clone)]
pub struct Scale {
    pub name: &'static str,
    /// `fleet.bench`: store paths and MB of the shared closure.
    pub paths: u32,
    pub total_mb: u32,
    /// The update: this many new blobs of this many MB in all (plus two package upgrades and
    /// one new package).
    pub update_paths: u32,
    pub update_mb: u32,
    /// Host counts of the fresh-copy comparisons (the last one is also the incremental's).
    pub fresh: Vec<usize>,
    /// Link rate of the rate-limited runs, Mbit/s.
    pub rate: u32,
    /// The deployer's uplink in the runs behind one uplink (the relay's), Mbit/s.
    pub uplink: u32,
    /// Host counts of the deployer-CPU series (fleet only).
    pub series: Vec<usize>,
    /// Hosts of the no-op apply and status (the last of `series`).
    pub many: usize,
    /// Repetitions of the short runs (no-op apply, status); the median is reported.
    pub repeats: usize,
    /// MB each host's evaluation holds in the heavy-evaluation runs (`fleet.evalMemoryMB`).
    pub eval_heavy_mb: u32,
    /// `--eval-max-memory` of the limited heavy run, MB.
    pub eval_limit_mb: u64,
}

impl Scale {
    pub(super) fn full() -> Scale {
        Scale {
            name: "full",
            paths: 200,
            total_mb: 150,
            update_paths: 4,
            update_mb: 8,
            fresh: vec![1, 10],
            rate: 20,
            uplink: 100,
            series: vec![1, 10, 25, 50],
            many: 50,
            repeats: 5,
            eval_heavy_mb: 100,
            eval_limit_mb: 1024,
        }
    }

    pub(super) fn quick() -> Scale {
        Scale {
            name: "quick",
            paths: 40,
            total_mb: 20,
            update_paths: 2,
            update_mb: 2,
            fresh: vec![1, 3],
            rate: 20,
            uplink: 100,
            series: vec![1, 3, 6],
            many: 6,
            repeats: 3,
            eval_heavy_mb: 20,
            eval_limit_mb: 200,
        }
    }

    pub(super) fn max_fresh(&self) -> usize {
        self.fresh.iter().copied().max().unwrap_or(1)
    }
}

/// What the hosts' configurations say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    /// The benchmark system.
    Base,
    /// The same with a few packages changed.
    Update,
    /// The base system after a nixpkgs bump (`fleet.massRebuild`: every hash changes), with
    /// one package in ten a new version: htop, and a tenth of the blobs with new contents.
    Bump,
}

/// Who did the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Fleet,
    /// `fleet apply` with a relay host forwarding to the others (`relay = "h1"`).
    FleetRelay,
    /// `fleet apply --no-compress`: the serve protocol, even to hosts with zstd.
    FleetNoCompress,
    /// `fleet apply --no-deltas`: every changed path whole.
    FleetNoDeltas,
    /// `nix-copy-closure` per host, one after the other.
    NccSeq,
    /// `nix-copy-closure` per host, all at once.
    NccPar,
    /// `nix-copy-closure --gzip` per host, all at once.
    NccParGzip,
    /// export | import straight into each store (no SSH).
    Floor,
}

impl Tool {
    pub fn label(self, hosts: usize) -> &'static str {
        match (self, hosts) {
            (Tool::Fleet, _) => "fleet apply",
            (Tool::FleetRelay, _) => "fleet apply, relay h1",
            (Tool::FleetNoCompress, _) => "fleet apply --no-compress",
            (Tool::FleetNoDeltas, _) => "fleet apply --no-deltas",
            (Tool::NccSeq | Tool::NccPar, 1) => "nix-copy-closure",
            (Tool::NccSeq, _) => "nix-copy-closure, sequential",
            (Tool::NccPar, _) => "nix-copy-closure, parallel",
            (Tool::NccParGzip, 1) => "nix-copy-closure --gzip",
            (Tool::NccParGzip, _) => "nix-copy-closure --gzip, parallel",
            (Tool::Floor, _) => "floor: export \\| import, no SSH",
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub wall: Duration,
    /// The deployer's CPU time (user + system) of the measured processes and their children.
    pub cpu: Duration,
    /// The busy CPU time of the whole machine during the run (deployer, hosts, kernel, noise).
    pub machine: Duration,
    /// Bytes sent into the hosts' links (all hosts).
    pub wire: u64,
    /// Bytes the deployer sent into the bridge (its uplink).
    pub uplink: u64,
    /// NAR bytes that had to reach the hosts (all hosts).
    pub nar: u64,
    /// fleet only: compressed bytes it wrote (all hosts), and its phases.
    pub fleet: Option<FleetDetail>,
    /// Other work (cargo, rustc, tests) ran at the start or the end of the run.
    pub noisy: bool,
}

/// One run of a short command.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timed {
    pub wall: Duration,
    /// The deployer's CPU time.
    pub cpu: Duration,
    /// The machine's busy CPU time (the simulated hosts' sshd, shells, `nix-store` included).
    pub machine: Duration,
    /// Other work ran at the start or the end of the run.
    pub noisy: bool,
}

#[derive(Debug, Clone, Default)]
pub struct FleetDetail {
    pub paths: u64,
    pub sent_compressed: u64,
    /// From the process start to the first `copying` event (start, saved plan, connect, read
    /// every host's state).
    pub prepare: Duration,
    /// First `copying` to last `copied`.
    pub copy: Duration,
    /// Last `copied` to last outcome (activation and confirmation).
    pub activate: Duration,
}

/// One row of the results.
#[derive(Debug, Clone)]
pub struct Sample {
    pub scenario: &'static str,
    pub hosts: usize,
    pub rate: Option<u32>,
    pub tool: Tool,
    pub m: Measured,
}

/// Timings of fleet's short commands on many hosts.
#[derive(Debug, Clone, Default)]
pub struct Short {
    pub hosts: usize,
    /// `fleet apply plan.json` of a plan where every host is unchanged: every run.
    pub noop_apply: Vec<Timed>,
    /// `fleet status --no-eval`: every run.
    pub status: Vec<Timed>,
    /// For reference (evaluation included): `fleet status`, `fleet apply`, `fleet plan`.
    pub status_eval: Duration,
    pub apply_eval: Duration,
    pub plan_eval: Duration,
    /// The evaluation cache and bounded evaluation on the same hosts.
    pub eval: super::evaluation::EvalBench,
}

/// Everything a run found.
pub struct Results {
    pub scale: Scale,
    pub samples: Vec<Sample>,
    pub short: Option<Short>,
    pub machine: report::MachineInfo,
    pub took: Duration,
}
