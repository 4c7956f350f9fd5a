//! `cargo xtask bench [--quick] [--write|--no-write] [--fleet PATH]`: fleet against what users
//! run today, on the simulated fleet, side by side in one run, on the same closure.
//!
//! # What runs
//! Every host gets a configuration of the nixpkgs stand-in with `fleet.bench` (a synthetic
//! system of about 200 store paths / 150 MB of real shared libraries; `--quick`: 40 / 20 MB)
//! and its own `networking.hostName`, so hosts share the big closure but each has its own
//! toplevel and deployment package, as in a real fleet. Each measurement gets a **fresh
//! testbed** (empty stores, each host's `/nix` a tmpfs; starting 10 hosts takes well under a
//! second), except where a scenario needs hosts that already run something.
//!
//! - `fleet`: `fleet plan --out plan.json` (evaluation and build, not timed), then
//!   `fleet apply plan.json --json` timed: connect, read state, copy, activate, confirm.
//! - `nix-copy-closure`: `nix-copy-closure --to root@host <package>` per host, one after the
//!   other (`seq`) or all at once (`par`); `-z` adds `--gzip` (ssh compression).
//! - `floor`: per host at once, `nix-store --export <closure> | nsenter <host> nix-store --import`:
//!   no SSH, no network, no protocol; what the hosts' own imports cost.
//!
//! Deployer CPU time is the `wait4` rusage of the measured process and the children it waited
//! for (fleet and its local `nix-store`; `nix-copy-closure` and its `ssh`; the floor's
//! `nix-store --export`), like `/usr/bin/time`. The simulated hosts run on the same cores, so the
//! machine's busy time (`/proc/stat`) is also recorded. Bytes are counted on each host's veth.
//!
//! # Layout
//! - `mod.rs`: options and the scenarios (`Ctx::run_all`).
//! - `model.rs`: scales, variants, tools and what a run measured.
//! - `beds.rs`: the testbeds and the tools run on them (fleet, nix-copy-closure, the floor).
//! - `bump.rs`: after a nixpkgs bump (deltas), and the quick fresh-copy runner.
//! - `evaluation.rs`: the no-op re-plan with the evaluation cache, peak memory of heavy
//!   evaluations with and without `--eval-max-memory`.
//! - `uplink.rs`: hosts behind one slow deployer uplink, with and without a relay.
//! - `fleet_output.rs`: fleet's phases, outcomes and bytes from its `apply --json` events.
//! - `measure.rs`: rusage, `/proc/stat`, veth counters.
//! - `report.rs`: console tables, ratios, `docs/performance.md`.
//! - `targets.rs`: the targets checked (the rows of the "Targets" table).

mod beds;
mod bump;
mod evaluation;
mod fleet_output;
mod measure;
mod model;
mod report;
mod targets;
mod uplink;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_testbed::{repo_root, HostSpec, Testbed};

use measure::{machine_busy, spawn, veth_tx};

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const USAGE: &str = "usage: cargo xtask bench [--quick] [--write | --no-write] [--fleet PATH]
                         [--only-evaluation | --only-relay | --only-bump | --only-fresh]

  --quick        a smoke run: 40 paths / 20 MB, 1 and 3 hosts, no-op and status on 6 hosts
  --write        rewrite the generated part of docs/performance.md (default for a full run)
  --no-write     do not touch docs/performance.md (default for --quick)
  --fleet PATH   measure this fleet binary instead of building one (compare two builds)
  --only-evaluation  only the evaluation runs (cache, heavy evaluations) on the biggest bed;
                 never writes docs/performance.md
  --only-relay   only the runs behind one slow uplink (parallel nix-copy-closure, fleet
                 direct, fleet with a relay); never writes docs/performance.md
  --only-bump    only the \"after a nixpkgs bump\" runs (1 host and the most hosts, 20 Mbit/s,
                 fleet with and without deltas, nix-copy-closure); never writes
  --only-fresh   only the fresh copy to the most hosts on unlimited links: fleet, fleet
                 --no-compress, parallel nix-copy-closure, 3 rounds, medians; never writes";

use beds::drop_bed;
use fleet_output::{fleet_events, nar_of_fleet};
pub use model::*;
pub fn run(args: &[OsString]) -> Result<ExitCode> {
    let mut quick = false;
    let mut only_evaluation = false;
    let mut only_relay = false;
    let mut only_bump = false;
    let mut only_fresh = false;
    let mut write = None;
    let mut fleet = None;
    let mut args = args.iter();
    while let Some(a) = args.next() {
        match a.to_string_lossy().as_ref() {
            "--quick" => quick = true,
            "--only-evaluation" => only_evaluation = true,
            "--only-relay" => only_relay = true,
            "--only-bump" => only_bump = true,
            "--only-fresh" => only_fresh = true,
            "--fleet" => match args.next() {
                Some(p) => fleet = Some(std::path::absolute(PathBuf::from(p))?),
                None => return Err("--fleet needs a path".into()),
            },
            "--write" => write = Some(true),
            "--no-write" => write = Some(false),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            other => {
                eprintln!("xtask bench: unknown argument `{other}`\n{USAGE}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    // A partial run never rewrites docs/performance.md.
    let write =
        write.unwrap_or(!quick) && !only_evaluation && !only_relay && !only_bump && !only_fresh;
    let scale = if quick { Scale::quick() } else { Scale::full() };

    crate::setup()?;
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))?;

    let fleet = match fleet {
        Some(f) => f,
        None => {
            eprintln!("xtask bench: building fleet (release)");
            let status = crate::cargo()
                .args([
                    "build",
                    "--quiet",
                    "--release",
                    "-p",
                    "fleet",
                    "--bin",
                    "fleet",
                ])
                .status()?;
            if !status.success() {
                return Err("cargo build --release -p fleet failed".into());
            }
            crate::target_dir().join("release/fleet")
        }
    };
    let busy = measure::busy_processes();
    let load = measure::loadavg();
    eprintln!("xtask bench: load average {load}");
    if !busy.is_empty() {
        eprintln!(
            "xtask bench: warning: other work is running ({}); timings will be noisy",
            busy.join(", ")
        );
    }
    let logs = crate::target_dir().join("bench/logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs)?;
    let mut ctx = Ctx {
        fleet: fleet.clone(),
        scale: scale.clone(),
        interrupted,
        logs,
        packages: HashMap::new(),
        closures: HashMap::new(),
        nar_sizes: HashMap::new(),
        samples: Vec::new(),
        seq: 0,
    };
    let mut machine = report::MachineInfo::collect(&load, &busy);
    if ctx.fleet != crate::target_dir().join("release/fleet") {
        machine.commit = format!("{} (binary)", ctx.fleet.display());
    }
    let started = Instant::now();
    let short = if only_evaluation {
        ctx.run_evaluation()?
    } else if only_relay {
        ctx.uplink_runs()?;
        None
    } else if only_bump {
        ctx.run_bump()?
    } else if only_fresh {
        ctx.run_fresh(3)?
    } else {
        ctx.run_all()?
    };
    let results = Results {
        scale,
        samples: std::mem::take(&mut ctx.samples),
        short,
        machine,
        took: started.elapsed(),
    };
    let text = report::console(&results);
    println!("{text}");
    let json = report::json(&results);
    let json_path = crate::target_dir().join("bench/results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)?;
    eprintln!("xtask bench: raw results in {}", json_path.display());
    if write {
        let path = repo_root().join("docs/performance.md");
        report::write_doc(&path, &results)?;
        eprintln!("xtask bench: updated {}", path.display());
    }
    eprintln!("xtask bench: took {:.0?}", results.took);
    Ok(ExitCode::SUCCESS)
}

struct Ctx {
    fleet: PathBuf,
    scale: Scale,
    interrupted: Arc<AtomicBool>,
    logs: PathBuf,
    /// (host, variant) → deployment package, learnt from plans.
    packages: HashMap<(String, Variant), String>,
    /// package → its closure.
    closures: HashMap<String, Vec<String>>,
    nar_sizes: HashMap<String, u64>,
    samples: Vec<Sample>,
    /// Numbers log files.
    seq: u32,
}

/// A testbed with a fleet directory.
struct Bed {
    tb: Testbed,
    dir: PathBuf,
    home: PathBuf,
    variant: Variant,
    names: Vec<String>,
    scale: Scale,
}

impl Ctx {
    fn check(&self) -> Result<()> {
        if self.interrupted.load(Ordering::SeqCst) {
            Err("interrupted".into())
        } else {
            Ok(())
        }
    }

    fn log(&mut self, what: &str) -> PathBuf {
        self.seq += 1;
        let safe: String = what
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        self.logs.join(format!("{:03}-{safe}.log", self.seq))
    }

    fn record(&mut self, scenario: &'static str, bed: &Bed, tool: Tool, m: Measured) {
        let s = Sample {
            scenario,
            hosts: bed.names.len(),
            rate: bed.tb.hosts().first().and_then(|h| h.rate_mbit),
            tool,
            m,
        };
        eprintln!("xtask bench: {}", report::line(&s));
        self.samples.push(s);
    }

    fn run_all(&mut self) -> Result<Option<Short>> {
        let sc = self.scale.clone();
        let max = sc.max_fresh();

        // 1. Fresh copies, unlimited links: fleet, nix-copy-closure (seq, par), floor.
        for &n in &sc.fresh {
            let bed = self.fresh_fleet(n, None)?;
            drop_bed(bed)?;
            if n == max {
                // Is compressing worth it on a fast link? The serve protocol, same hosts.
                let bed = self.fresh_fleet_with(n, None, Tool::FleetNoCompress)?;
                drop_bed(bed)?;
            }
            if n > 1 {
                self.fresh_ncc(n, None, Tool::NccSeq)?;
            }
            self.fresh_ncc(n, None, Tool::NccPar)?;
            self.fresh_floor(n)?;
        }
        // 2. Fresh copies over rate-limited links. Sequential nix-copy-closure is left out
        //    for more than one host: each host has its own link, so it takes n times the
        //    one-host time (10 minutes for 10 hosts).
        for &n in &sc.fresh {
            let bed = self.fresh_fleet(n, Some(sc.rate))?;
            drop_bed(bed)?;
            self.fresh_ncc(n, Some(sc.rate), Tool::NccPar)?;
            self.fresh_ncc(n, Some(sc.rate), Tool::NccParGzip)?;
        }
        // 2b. The most hosts behind one slow deployer uplink: each byte once per host, or
        //     once through a relay.
        self.uplink_runs()?;
        // 3. Incremental deploys: hosts run the base system; the update changes a few
        //    packages.
        for rate in [None, Some(sc.rate)] {
            self.incremental_fleet(max, rate)?;
            self.incremental_ncc(max, rate, Tool::NccSeq)?;
            self.incremental_ncc(max, rate, Tool::NccPar)?;
        }
        // 4. After a nixpkgs bump, 20 Mbit/s: fleet (deltas) and nix-copy-closure.
        self.bump(false)?;
        // 5. Deployer CPU per host (fleet, fresh, unlimited): the fresh runs above cover the
        //    small counts; then no-op apply and status on the biggest bed.
        let mut short = None;
        for &n in &sc.series {
            if sc.fresh.contains(&n) && n != sc.many {
                continue;
            }
            let bed = self.fresh_fleet(n, None)?;
            if n == sc.many {
                short = Some(self.short_commands(&bed)?);
            }
            drop_bed(bed)?;
        }
        Ok(short)
    }

    /// Only the evaluation runs, on a bed of the most hosts deployed first (`--only-evaluation`).
    fn run_evaluation(&mut self) -> Result<Option<Short>> {
        let n = self.scale.many;
        let bed = self.bed(n, None, Variant::Base)?;
        // The hosts run what fleet.toml says (deployed, not timed), as in the full run: a
        // no-op plan is one of a deployed fleet.
        let plan = self.plan(&bed, "plan")?;
        self.fleet_apply(&bed, &plan, "applied")?;
        evaluation::hold(&bed)?;
        let eval = self.evaluation(&bed)?;
        drop_bed(bed)?;
        Ok(Some(Short {
            hosts: n,
            eval,
            ..Short::default()
        }))
    }

    // -----------------------------------------------------------------------------------
    // Scenarios

    fn fresh_fleet(&mut self, n: usize, rate: Option<u32>) -> Result<Bed> {
        self.fresh_fleet_with(n, rate, Tool::Fleet)
    }

    fn fresh_fleet_with(&mut self, n: usize, rate: Option<u32>, tool: Tool) -> Result<Bed> {
        self.check()?;
        let bed = self.bed(n, rate, Variant::Base)?;
        let plan = self.plan(&bed, "plan")?;
        let extra: &[&str] = match tool {
            Tool::FleetNoCompress => &["--no-compress"],
            Tool::FleetNoDeltas => &["--no-deltas"],
            _ => &[],
        };
        let m = self.fleet_apply_with(&bed, &plan, "applied", extra)?;
        self.record("fresh", &bed, tool, m);
        Ok(bed)
    }

    fn fresh_ncc(&mut self, n: usize, rate: Option<u32>, tool: Tool) -> Result<()> {
        self.check()?;
        let bed = self.bed(n, rate, Variant::Base)?;
        let packages = self.packages_of(&bed, Variant::Base)?;
        let nar = self.nar_to_send(&packages, None)?;
        let mut m = self.ncc(&bed, &packages, tool)?;
        m.nar = nar;
        self.record("fresh", &bed, tool, m);
        drop_bed(bed)
    }

    fn fresh_floor(&mut self, n: usize) -> Result<()> {
        self.check()?;
        let bed = self.bed(n, None, Variant::Base)?;
        let packages = self.packages_of(&bed, Variant::Base)?;
        let nar = self.nar_to_send(&packages, None)?;
        let mut m = self.floor(&bed, &packages)?;
        m.nar = nar;
        self.record("fresh", &bed, Tool::Floor, m);
        drop_bed(bed)
    }

    fn incremental_fleet(&mut self, n: usize, rate: Option<u32>) -> Result<()> {
        self.check()?;
        let mut bed = self.bed(n, rate, Variant::Base)?;
        // The hosts run the base system (deployed by fleet, not timed).
        let plan = self.plan(&bed, "seed-plan")?;
        self.fleet_apply(&bed, &plan, "applied")?;
        bed.set_variant(Variant::Update)?;
        let plan = self.plan(&bed, "update-plan")?;
        let m = self.fleet_apply(&bed, &plan, "applied")?;
        self.record("incremental", &bed, Tool::Fleet, m);
        drop_bed(bed)
    }

    fn incremental_ncc(&mut self, n: usize, rate: Option<u32>, tool: Tool) -> Result<()> {
        self.check()?;
        let mut bed = self.bed(n, rate, Variant::Base)?;
        let base = self.packages_of(&bed, Variant::Base)?;
        // The hosts hold the base closure (imported directly, not timed).
        self.floor(&bed, &base)?;
        bed.set_variant(Variant::Update)?;
        let update = self.packages_of(&bed, Variant::Update)?;
        let nar = self.nar_to_send(&update, Some(&base))?;
        let mut m = self.ncc(&bed, &update, tool)?;
        m.nar = nar;
        self.record("incremental", &bed, tool, m);
        drop_bed(bed)
    }

    /// No-op apply and status on a bed whose hosts run what fleet.toml says.
    fn short_commands(&mut self, bed: &Bed) -> Result<Short> {
        self.check()?;
        let mut short = Short {
            hosts: bed.names.len(),
            ..Short::default()
        };
        let t = Instant::now();
        let plan = self.plan(bed, "noop-plan")?;
        short.plan_eval = t.elapsed();
        for _ in 0..self.scale.repeats {
            let m = self.fleet_apply(bed, &plan, "unchanged")?;
            short.noop_apply.push(Timed {
                wall: m.wall,
                cpu: m.cpu,
                machine: m.machine,
                noisy: m.noisy,
            });
        }
        for _ in 0..self.scale.repeats {
            let t = self.fleet_simple(bed, &["status", "--no-eval"], "status")?;
            short.status.push(t);
        }
        short.status_eval = self.fleet_simple(bed, &["status"], "status-eval")?.wall;
        short.apply_eval = self.fleet_simple(bed, &["apply"], "apply-eval")?.wall;
        short.eval = self.evaluation(bed)?;
        eprintln!(
            "xtask bench: {} hosts: no-op apply (saved plan) {}, status --no-eval {}",
            short.hosts,
            report::secs_list(&short.noop_apply),
            report::secs_list(&short.status)
        );
        Ok(short)
    }
}
