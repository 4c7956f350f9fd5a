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
//! - `mod.rs`: options, scenarios, the testbeds and the tools.
//! - `measure.rs`: rusage, `/proc/stat`, veth counters.
//! - `report.rs`: console tables, ratios, targets, `docs/performance.md`.

mod measure;
mod report;

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

  --quick        a smoke run: 40 paths / 20 MB, 1 and 3 hosts, no-op and status on 6 hosts
  --write        rewrite the generated part of docs/performance.md (default for a full run)
  --no-write     do not touch docs/performance.md (default for --quick)
  --fleet PATH   measure this fleet binary instead of building one (compare two builds)";

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
    /// Host counts of the deployer-CPU series (fleet only).
    pub series: Vec<usize>,
    /// Hosts of the no-op apply and status (the last of `series`).
    pub many: usize,
    /// Repetitions of the short runs (no-op apply, status); the median is reported.
    pub repeats: usize,
}

impl Scale {
    fn full() -> Scale {
        Scale {
            name: "full",
            paths: 200,
            total_mb: 150,
            update_paths: 4,
            update_mb: 8,
            fresh: vec![1, 10],
            rate: 20,
            series: vec![1, 10, 25, 50],
            many: 50,
            repeats: 5,
        }
    }

    fn quick() -> Scale {
        Scale {
            name: "quick",
            paths: 40,
            total_mb: 20,
            update_paths: 2,
            update_mb: 2,
            fresh: vec![1, 3],
            rate: 20,
            series: vec![1, 3, 6],
            many: 6,
            repeats: 3,
        }
    }

    fn max_fresh(&self) -> usize {
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
}

/// Who did the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Fleet,
    /// `fleet apply --no-compress`: the serve protocol, even to hosts with zstd.
    FleetNoCompress,
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
            (Tool::FleetNoCompress, _) => "fleet apply --no-compress",
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
}

/// Everything a run found.
pub struct Results {
    pub scale: Scale,
    pub samples: Vec<Sample>,
    pub short: Option<Short>,
    pub machine: report::MachineInfo,
    pub took: Duration,
}

pub fn run(args: &[OsString]) -> Result<ExitCode> {
    let mut quick = false;
    let mut write = None;
    let mut fleet = None;
    let mut args = args.iter();
    while let Some(a) = args.next() {
        match a.to_string_lossy().as_ref() {
            "--quick" => quick = true,
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
    let write = write.unwrap_or(!quick);
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
    let short = ctx.run_all()?;
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
        // 3. Incremental deploys: hosts run the base system; the update changes a few
        //    packages.
        for rate in [None, Some(sc.rate)] {
            self.incremental_fleet(max, rate)?;
            self.incremental_ncc(max, rate, Tool::NccSeq)?;
            self.incremental_ncc(max, rate, Tool::NccPar)?;
        }
        // 4. Deployer CPU per host (fleet, fresh, unlimited): the fresh runs above cover the
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
        eprintln!(
            "xtask bench: {} hosts: no-op apply (saved plan) {}, status --no-eval {}",
            short.hosts,
            report::secs_list(&short.noop_apply),
            report::secs_list(&short.status)
        );
        Ok(short)
    }

    // -----------------------------------------------------------------------------------
    // Testbeds

    fn bed(&mut self, n: usize, rate: Option<u32>, variant: Variant) -> Result<Bed> {
        let names: Vec<String> = (1..=n).map(|i| format!("h{i}")).collect();
        // Each host's /nix on its own tmpfs: emptied for free at teardown, and no aging of the
        // deployer's filesystem. On ext4, imports right after a teardown that deleted
        // gigabytes of store files spent most of their time in inode allocation
        // (`recently_deleted`, `find_get_block_common`): runs took 7 to 12 s by the order they
        // ran in. A tmpfs only uses the memory that is written.
        let tmpfs_mb = self.scale.total_mb * 2 + 128;
        let tmpfs = tmpfs_fits(n, self.scale.total_mb + 64);
        if !tmpfs {
            eprintln!(
                "xtask bench: warning: not enough free memory for {n} tmpfs stores; using the disk"
            );
        }
        let specs = names.iter().map(|name| {
            let mut s = HostSpec::new(name.as_str());
            if tmpfs {
                s = s.nix_tmpfs_mb(tmpfs_mb);
            }
            match rate {
                Some(r) => s.rate_mbit(r),
                None => s,
            }
        });
        let tb = Testbed::builder()
            .hosts(specs)
            .extra_platforms(None)
            .start()?;
        let dir = tb.state_dir().join("bench");
        let home = tb.state_dir().join("bench-home");
        std::fs::create_dir_all(home.join(".ssh"))?;
        let toml = tb.fleet_toml(&fleet_testbed::nixpkgs_standin(), |h| {
            dir.join("hosts").join(&h.name).join("configuration.nix")
        });
        let bed = Bed {
            tb,
            dir,
            home,
            variant,
            names,
            scale: self.scale.clone(),
        };
        std::fs::create_dir_all(&bed.dir)?;
        std::fs::write(bed.dir.join("fleet.toml"), toml)?;
        bed.write_configs()?;
        Ok(bed)
    }

    // -----------------------------------------------------------------------------------
    // Tools

    /// `fleet plan --out plan.json` (evaluates and builds; not timed). Learns the packages.
    fn plan(&mut self, bed: &Bed, what: &str) -> Result<PathBuf> {
        let path = bed.dir.join(format!("{what}.json"));
        let log = self.log(what);
        let t = Instant::now();
        let mut c = bed.fleet(&self.fleet, &["plan", "--out"]);
        c.arg(&path);
        spawn(&mut c, "fleet plan", &log, false)?.reap()?;
        eprintln!(
            "xtask bench:   ({} hosts: fleet plan, evaluation and build, {:.1} s)",
            bed.names.len(),
            t.elapsed().as_secs_f64()
        );
        let plan: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        for h in plan["hosts"].as_array().into_iter().flatten() {
            if let (Some(name), Some(package)) = (h["name"].as_str(), h["package"].as_str()) {
                self.packages
                    .insert((name.to_owned(), bed.variant), package.to_owned());
            }
        }
        Ok(path)
    }

    /// The deployment package of every host of the bed for `variant` (planning if needed).
    fn packages_of(&mut self, bed: &Bed, variant: Variant) -> Result<Vec<String>> {
        assert_eq!(
            bed.variant, variant,
            "the bed's configurations are {variant:?}"
        );
        if bed
            .names
            .iter()
            .any(|n| !self.packages.contains_key(&(n.clone(), variant)))
        {
            self.plan(bed, "packages-plan")?;
        }
        bed.names
            .iter()
            .map(|n| {
                self.packages
                    .get(&(n.clone(), variant))
                    .cloned()
                    .ok_or_else(|| format!("no package for {n} in the plan").into())
            })
            .collect()
    }

    fn closure(&mut self, package: &str) -> Result<Vec<String>> {
        if let Some(c) = self.closures.get(package) {
            return Ok(c.clone());
        }
        let out = Command::new("nix-store")
            .args(["--query", "--requisites", package])
            .output()?;
        if !out.status.success() {
            return Err(format!("nix-store -qR {package} failed").into());
        }
        let c: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        self.closures.insert(package.to_owned(), c.clone());
        Ok(c)
    }

    /// NAR bytes to send: per host, its package's closure minus what it holds (`have`).
    fn nar_to_send(&mut self, packages: &[String], have: Option<&[String]>) -> Result<u64> {
        let mut per_host: Vec<Vec<String>> = Vec::new();
        for (i, p) in packages.iter().enumerate() {
            let want = self.closure(p)?;
            let held: BTreeSet<String> = match have {
                Some(h) => self.closure(&h[i])?.into_iter().collect(),
                None => BTreeSet::new(),
            };
            per_host.push(want.into_iter().filter(|x| !held.contains(x)).collect());
        }
        let unknown: BTreeSet<&String> = per_host
            .iter()
            .flatten()
            .filter(|p| !self.nar_sizes.contains_key(*p))
            .collect();
        if !unknown.is_empty() {
            let unknown: Vec<&String> = unknown.into_iter().collect();
            for chunk in unknown.chunks(500) {
                let out = Command::new("nix-store")
                    .args(["--query", "--size"])
                    .args(chunk.iter().map(|s| s.as_str()))
                    .output()?;
                let sizes: Vec<u64> = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect();
                if sizes.len() != chunk.len() {
                    return Err("nix-store --query --size gave the wrong number of lines".into());
                }
                for (p, s) in chunk.iter().zip(sizes) {
                    self.nar_sizes.insert((*p).clone(), s);
                }
            }
        }
        Ok(per_host.iter().flatten().map(|p| self.nar_sizes[p]).sum())
    }

    /// `fleet apply PLAN --json`, timed; every host must end `expect`.
    fn fleet_apply(&mut self, bed: &Bed, plan: &Path, expect: &str) -> Result<Measured> {
        self.fleet_apply_with(bed, plan, expect, &[])
    }

    fn fleet_apply_with(
        &mut self,
        bed: &Bed,
        plan: &Path,
        expect: &str,
        extra: &[&str],
    ) -> Result<Measured> {
        let log = self.log(&format!("fleet-apply-{}-hosts", bed.names.len()));
        let json_path = log.with_extension("json");
        let mut c = bed.fleet(&self.fleet, &["apply", "--json"]);
        c.args(extra).arg(plan);
        c.stdout(std::fs::File::create(&json_path)?);
        let probe = Probe::start(bed);
        let proc = spawn(&mut c, "fleet apply", &log, true)?;
        let cpu = proc.reap()?;
        let mut m = probe.finish(bed, cpu);
        let events = std::fs::read_to_string(&json_path)?;
        let (detail, outcomes) = fleet_events(&events, m.wall);
        let wrong: Vec<String> = outcomes
            .iter()
            .filter(|(_, o)| o.as_str() != expect)
            .map(|(h, o)| format!("{h}: {o}"))
            .collect();
        if outcomes.len() != bed.names.len() || !wrong.is_empty() {
            return Err(format!(
                "fleet apply: expected every host `{expect}`, got {outcomes:?}; see {}",
                log.display()
            )
            .into());
        }
        m.nar = detail.as_ref().map_or(0, |_| nar_of_fleet(&events));
        m.fleet = detail;
        Ok(m)
    }

    /// A fleet command that only has to succeed: (wall, CPU).
    fn fleet_simple(&mut self, bed: &Bed, args: &[&str], what: &str) -> Result<Timed> {
        let log = self.log(what);
        let mut c = bed.fleet(&self.fleet, args);
        let probe = Probe::start(bed);
        let cpu = spawn(&mut c, what, &log, false)?.reap()?;
        let m = probe.finish(bed, cpu);
        Ok(Timed {
            wall: m.wall,
            cpu,
            machine: m.machine,
            noisy: m.noisy,
        })
    }

    /// `nix-copy-closure --to root@host <package>` for every host (one by one or at once).
    fn ncc(&mut self, bed: &Bed, packages: &[String], tool: Tool) -> Result<Measured> {
        let mut cmds = Vec::new();
        for (h, p) in bed.tb.hosts().iter().zip(packages) {
            let log = self.log(&format!("ncc-{}", h.name));
            let mut c = Command::new("nix-copy-closure");
            if tool == Tool::NccParGzip {
                c.arg("--gzip");
            }
            c.args(["--to", &h.ssh_target(), p])
                .env("NIX_SSHOPTS", bed.tb.nix_sshopts())
                .envs(bed.tb.nix_env())
                .stdin(Stdio::null());
            cmds.push((c, log));
        }
        let probe = Probe::start(bed);
        let mut cpu = Duration::ZERO;
        if tool == Tool::NccSeq {
            for (mut c, log) in cmds {
                cpu += spawn(&mut c, "nix-copy-closure", &log, false)?.reap()?;
            }
        } else {
            let procs = cmds
                .iter_mut()
                .map(|(c, log)| spawn(c, "nix-copy-closure", log, false))
                .collect::<Result<Vec<_>>>()?;
            for p in procs {
                cpu += p.reap()?;
            }
        }
        Ok(probe.finish(bed, cpu))
    }

    /// Per host at once: `nix-store --export <closure> | nsenter <host> nix-store --import`.
    /// The deployer's CPU is the exports'.
    fn floor(&mut self, bed: &Bed, packages: &[String]) -> Result<Measured> {
        let mut jobs = Vec::new();
        for (i, p) in packages.iter().enumerate() {
            let closure = self.closure(p)?;
            let log = self.log(&format!("floor-{}", bed.names[i]));
            let mut export = Command::new("nix-store");
            export.arg("--export").args(&closure).stdin(Stdio::null());
            let mut import = Command::new("nsenter");
            import.arg("-t").arg(bed.holder_pid(i)?.to_string()).args([
                "-m",
                "-n",
                "--",
                "nix-store",
                "--import",
            ]);
            jobs.push((export, import, log));
        }
        let probe = Probe::start(bed);
        let mut procs = Vec::new();
        for (mut export, mut import, log) in jobs {
            export.stdout(Stdio::piped());
            let mut e = spawn(&mut export, "nix-store --export", &log, true)?;
            let pipe = e.take_stdout().ok_or("no export stdout")?;
            import.stdin(Stdio::from(pipe));
            let i = spawn(&mut import, "nix-store --import", &log, false)?;
            drop(import);
            procs.push((e, i));
        }
        let mut cpu = Duration::ZERO;
        for (e, i) in procs {
            cpu += e.reap()?;
            i.reap()?;
        }
        Ok(probe.finish(bed, cpu))
    }
}

impl Bed {
    fn write_configs(&self) -> Result<()> {
        for name in &self.names {
            let d = self.dir.join("hosts").join(name);
            std::fs::create_dir_all(&d)?;
            std::fs::write(
                d.join("configuration.nix"),
                config(name, self.variant, &self.scale),
            )?;
        }
        Ok(())
    }

    fn set_variant(&mut self, v: Variant) -> Result<()> {
        self.variant = v;
        self.write_configs()
    }

    fn fleet(&self, bin: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.args(args)
            .current_dir(&self.dir)
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("FLEET_FILE")
            .env_remove("FLEET_SUDO_PASSWORD_COMMAND")
            .env("HOME", &self.home)
            .env("USER", "bench")
            .env("NO_COLOR", "1")
            .envs(self.tb.nix_env())
            .stdin(Stdio::null());
        c
    }

    fn wire(&self) -> u64 {
        (0..self.names.len())
            .map(|i| veth_tx(self.tb.instance(), i))
            .sum()
    }

    /// A process in host `i`'s namespaces (they all share its private mount namespace).
    fn holder_pid(&self, i: usize) -> Result<u32> {
        let netns = &self.tb.hosts()[i].netns;
        let out = Command::new("ip").args(["netns", "pids", netns]).output()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse::<u32>().ok())
            .min()
            .ok_or_else(|| format!("no process in {netns}").into())
    }
}

/// Whether `hosts` stores of about `mb` MB each fit in memory with room to spare.
fn tmpfs_fits(hosts: usize, mb: u32) -> bool {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let available_kb: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let need_kb = hosts as u64 * u64::from(mb) * 1024;
    need_kb * 3 / 2 + 2 * 1024 * 1024 < available_kb
}

fn drop_bed(bed: Bed) -> Result<()> {
    bed.tb.teardown()?;
    Ok(())
}

/// A host's configuration of the nixpkgs stand-in.
fn config(host: &str, variant: Variant, s: &Scale) -> String {
    let update = match variant {
        Variant::Base => String::new(),
        Variant::Update => format!(
            "\n    ++ [ pkgs.jq ]\n    ++ pkgs.benchBlobs {{ paths = {}; totalMB = {}; seed = \"update\"; }}",
            s.update_paths, s.update_mb
        ),
    };
    let versions = match variant {
        Variant::Base => "",
        Variant::Update => {
            "\n  fleet.packageVersions.htop = \"3.3.1\";\n  fleet.packageVersions.curl = \"8.8.0\";"
        }
    };
    format!(
        "# fleet bench host ({variant:?}); scale: {name}\n\
         {{ pkgs, ... }}: {{\n  networking.hostName = \"{host}\";\n  \
         environment.systemPackages = [ pkgs.htop pkgs.git pkgs.tmux ]{update};\n  \
         fleet.bench = {{ paths = {paths}; totalMB = {mb}; seed = \"0\"; }};{versions}\n}}\n",
        name = s.name,
        paths = s.paths,
        mb = s.total_mb,
    )
}

/// Wall clock, machine CPU and veth counters around a run.
struct Probe {
    start: Instant,
    machine: Duration,
    wire: u64,
    noisy: bool,
}

impl Probe {
    fn start(bed: &Bed) -> Probe {
        // Write back what earlier runs left dirty (gigabytes of imported store paths), so the
        // kernel's writeback does not run during this measurement.
        // SAFETY: sync(2) has no preconditions.
        unsafe { libc::sync() };
        Probe {
            noisy: !measure::busy_processes().is_empty(),
            wire: bed.wire(),
            machine: machine_busy(),
            start: Instant::now(),
        }
    }

    fn finish(self, bed: &Bed, cpu: Duration) -> Measured {
        let wall = self.start.elapsed();
        Measured {
            wall,
            cpu,
            machine: machine_busy().saturating_sub(self.machine),
            wire: bed.wire().saturating_sub(self.wire),
            noisy: self.noisy || !measure::busy_processes().is_empty(),
            ..Measured::default()
        }
    }
}

/// fleet's phases and the hosts' outcomes, from `apply --json` events.
fn fleet_events(text: &str, wall: Duration) -> (Option<FleetDetail>, BTreeMap<String, String>) {
    let mut outcomes = BTreeMap::new();
    let (mut first_copying, mut last_copied, mut last_outcome) = (None::<u64>, 0u64, 0u64);
    let mut d = FleetDetail::default();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let at = v["at_ms"].as_u64().unwrap_or(0);
        match v["type"].as_str() {
            Some("phase") if v["phase"] == "copying" => {
                first_copying = Some(first_copying.map_or(at, |f| f.min(at)));
            }
            Some("log") => {
                if let Some(l) = v["line"].as_str() {
                    if let Some((paths, _nar, sent)) = parse_copied(l) {
                        last_copied = last_copied.max(at);
                        d.paths += paths;
                        d.sent_compressed += sent.unwrap_or(0);
                    }
                }
            }
            Some("outcome") => last_outcome = last_outcome.max(at),
            Some("summary") => {
                for h in v["hosts"].as_array().into_iter().flatten() {
                    if let (Some(n), Some(o)) = (h["name"].as_str(), h["outcome"].as_str()) {
                        outcomes.insert(n.to_owned(), o.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    let Some(first) = first_copying else {
        return (None, outcomes);
    };
    // Event times count from the start of the run (`at_ms`); only their differences are used:
    // the time before the first copy is the rest of the wall time.
    let ms = Duration::from_millis;
    let tail = ms(last_outcome.saturating_sub(first));
    d.copy = ms(last_copied.saturating_sub(first));
    d.activate = ms(last_outcome.saturating_sub(last_copied));
    d.prepare = wall.saturating_sub(tail);
    (Some(d), outcomes)
}

/// NAR bytes fleet reports as copied (all hosts).
fn nar_of_fleet(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "log")
        .filter_map(|v| v["line"].as_str().and_then(parse_copied))
        .map(|(_, nar, _)| nar)
        .sum()
}

/// "copied N paths (X bytes of NAR[, Y bytes sent compressed])".
fn parse_copied(line: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = line.strip_prefix("copied ")?;
    let (paths, rest) = rest.split_once(" paths (")?;
    let (nar, rest) = rest.split_once(" bytes of NAR")?;
    let sent = rest
        .strip_prefix(", ")
        .and_then(|r| r.split_once(" bytes sent compressed"))
        .and_then(|(s, _)| s.parse().ok());
    Some((paths.parse().ok()?, nar.parse().ok()?, sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copied_lines_parse() {
        assert_eq!(
            parse_copied("copied 3 paths (1000 bytes of NAR, 400 bytes sent compressed)"),
            Some((3, 1000, Some(400)))
        );
        assert_eq!(
            parse_copied("copied 3 paths (1000 bytes of NAR)"),
            Some((3, 1000, None))
        );
        assert_eq!(parse_copied("copying"), None);
    }

    #[test]
    fn phases_come_from_events() {
        let ev = r#"{"host":"h1","at_ms":10,"type":"phase","phase":"copying"}
{"host":"h1","at_ms":510,"type":"log","stream":"fleet","line":"copied 2 paths (100 bytes of NAR, 40 bytes sent compressed)"}
{"host":"h1","at_ms":810,"type":"outcome","outcome":{"kind":"applied"}}
{"type":"summary","hosts":[{"name":"h1","outcome":"applied"}]}"#;
        let (d, o) = fleet_events(ev, Duration::from_millis(1000));
        let d = d.unwrap();
        assert_eq!(d.copy, Duration::from_millis(500));
        assert_eq!(d.activate, Duration::from_millis(300));
        assert_eq!(d.prepare, Duration::from_millis(200));
        assert_eq!(d.sent_compressed, 40);
        assert_eq!(o["h1"], "applied");
        assert_eq!(nar_of_fleet(ev), 100);
    }

    #[test]
    fn configs_differ_by_variant() {
        let s = Scale::quick();
        let base = config("h1", Variant::Base, &s);
        let upd = config("h1", Variant::Update, &s);
        assert!(base.contains("fleet.bench = { paths = 40; totalMB = 20;"));
        assert!(!base.contains("jq"));
        assert!(upd.contains("pkgs.jq") && upd.contains("seed = \"update\""));
    }
}
