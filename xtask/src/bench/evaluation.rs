//! Evaluation at scale: `fleet plan` of many hosts with the evaluation cache (the no-op re-plan)
//! and without it, and the deployer's peak memory while evaluating many heavy hosts (the
//! stand-in's `fleet.evalMemoryMB`) with and without `--eval-max-memory`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::beds::config;
use super::measure::spawn;
use super::*;

/// What the evaluation runs measured.
#[derive(Debug, Clone, Default)]
pub struct EvalBench {
    pub hosts: usize,
    /// `fleet plan`, every host's evaluation in the cache: every run.
    pub plan_cached: Vec<Timed>,
    /// `fleet plan --no-eval-cache`, for reference.
    pub plan_uncached: Option<Timed>,
    /// MB each heavy host's evaluation holds.
    pub heavy_mb: u32,
    /// `--eval-max-memory` of the limited run, bytes.
    pub limit: u64,
    pub unlimited: Option<MemRun>,
    pub limited: Option<MemRun>,
}

/// One `fleet plan --no-eval-cache` of the heavy hosts.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemRun {
    pub wall: Duration,
    /// Peak of the summed resident memory of fleet and all its descendants.
    pub peak_total: u64,
    /// Peak resident memory of one process (fleet or one `nix-instantiate`).
    pub peak_process: u64,
}

impl Ctx {
    pub(super) fn evaluation(&mut self, bed: &Bed) -> Result<EvalBench> {
        self.check()?;
        let mut e = EvalBench {
            hosts: bed.names.len(),
            heavy_mb: self.scale.eval_heavy_mb,
            limit: self.scale.eval_limit_mb << 20,
            ..EvalBench::default()
        };
        // Warm: the plan before this one evaluated every host already.
        self.fleet_simple(bed, &["plan"], "plan-warm")?;
        for _ in 0..self.scale.repeats {
            let t = self.fleet_simple(bed, &["plan"], "plan-cached")?;
            e.plan_cached.push(t);
        }
        e.plan_uncached =
            Some(self.fleet_simple(bed, &["plan", "--no-eval-cache"], "plan-uncached")?);

        // Heavy hosts: evaluated again each time, without and with a limit.
        for name in &bed.names {
            let text = config(name, bed.variant, &bed.scale).replacen(
                "networking.hostName",
                &format!(
                    "fleet.evalMemoryMB = {};\n  networking.hostName",
                    e.heavy_mb
                ),
                1,
            );
            std::fs::write(
                bed.dir.join("hosts").join(name).join("configuration.nix"),
                text,
            )?;
        }
        e.unlimited = Some(self.plan_memory(bed, &["--eval-max-memory", "64G"], "plan-heavy")?);
        let limit = format!("{}M", self.scale.eval_limit_mb);
        e.limited =
            Some(self.plan_memory(bed, &["--eval-max-memory", &limit], "plan-heavy-limited")?);
        bed.write_configs()?;
        eprintln!(
            "xtask bench: {} hosts: plan (cached) {}, heavy plan peak {} MB unlimited, {} MB with {limit}",
            e.hosts,
            report::secs_list(&e.plan_cached),
            e.unlimited.map_or(0, |m| m.peak_total >> 20),
            e.limited.map_or(0, |m| m.peak_total >> 20),
        );
        Ok(e)
    }

    /// `fleet plan --no-eval-cache ARGS`, its wall time and the peak memory of its process tree.
    fn plan_memory(&mut self, bed: &Bed, args: &[&str], what: &str) -> Result<MemRun> {
        let log = self.log(what);
        let mut all = vec!["plan", "--no-eval-cache"];
        all.extend_from_slice(args);
        let mut c = bed.fleet(&self.fleet, &all);
        let start = Instant::now();
        let proc = spawn(&mut c, what, &log, false)?;
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (stop, root) = (stop.clone(), proc.pid() as u32);
            std::thread::spawn(move || {
                let (mut total, mut single) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let (t, s) = tree_rss(root);
                    total = total.max(t);
                    single = single.max(s);
                    std::thread::sleep(Duration::from_millis(20));
                }
                (total, single)
            })
        };
        let reaped = proc.reap();
        stop.store(true, Ordering::Relaxed);
        let (peak_total, peak_process) = watcher.join().map_err(|_| "memory watcher panicked")?;
        reaped?;
        Ok(MemRun {
            wall: start.elapsed(),
            peak_total,
            peak_process,
        })
    }
}

/// With `FLEET_BENCH_HOLD=FILE`: writes to FILE the shell lines that run fleet in this bed
/// (its folder and environment) and waits until FILE is removed, to profile by hand.
pub(super) fn hold(bed: &Bed) -> Result<()> {
    let Some(file) = std::env::var_os("FLEET_BENCH_HOLD") else {
        return Ok(());
    };
    let c = bed.fleet(Path::new("fleet"), &[]);
    let mut text = format!(
        "cd '{}'\nunset SSH_AUTH_SOCK FLEET_FILE\n",
        bed.dir.display()
    );
    for (k, v) in c.get_envs() {
        if let Some(v) = v {
            let v = v.to_string_lossy().replace('\'', "'\\''");
            let _ = writeln!(text, "export {}='{v}'", k.to_string_lossy());
        }
    }
    std::fs::write(&file, text)?;
    eprintln!("xtask bench: holding the bed; remove {file:?} to go on");
    while Path::new(&file).exists() {
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

/// The evaluation section: cached and uncached plans, heavy evaluations' memory.
pub(super) fn section(e: &EvalBench) -> String {
    let mut o = String::new();
    let mb = |b: u64| b >> 20;
    let _ = writeln!(o, "\n### Evaluation of {} hosts\n", e.hosts);
    if !e.plan_cached.is_empty() {
        let c = report::median(&e.plan_cached);
        let _ = writeln!(
            o,
            "`fleet plan` with every host in the evaluation cache: median {} s (runs {}); \
             `fleet plan --no-eval-cache`: {} s.\n",
            report::s(c.wall),
            report::secs_list(&e.plan_cached),
            e.plan_uncached.map_or("-".into(), |t| report::s(t.wall)),
        );
    }
    let _ = writeln!(
        o,
        "Heavy evaluations (`fleet.evalMemoryMB = {}` per host, `fleet plan --no-eval-cache`):\n\n\
         | limit per process | wall s | peak of fleet + all Nix processes, MB | peak of one process, MB |\n|---|---|---|---|",
        e.heavy_mb
    );
    for (label, run) in [
        ("none (64G)".to_owned(), e.unlimited),
        (format!("`--eval-max-memory {}M`", mb(e.limit)), e.limited),
    ] {
        if let Some(m) = run {
            let _ = writeln!(
                o,
                "| {label} | {} | {} | {} |",
                report::s(m.wall),
                mb(m.peak_total),
                mb(m.peak_process)
            );
        }
    }
    o
}

/// Summed and largest resident memory of `root` and its descendants, in bytes.
fn tree_rss(root: u32) -> (u64, u64) {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    let mut rss: HashMap<u32, u64> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (0, 0);
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        if let Some(pp) = field("PPid:") {
            parent.insert(pid, pp as u32);
        }
        rss.insert(pid, field("VmRSS:").unwrap_or(0) * 1024);
    }
    let in_tree = |mut pid: u32| {
        for _ in 0..64 {
            if pid == root {
                return true;
            }
            match parent.get(&pid) {
                Some(&pp) if pp != 0 => pid = pp,
                _ => return false,
            }
        }
        false
    };
    let mine: Vec<u64> = rss
        .iter()
        .filter(|(pid, _)| in_tree(**pid))
        .map(|(_, r)| *r)
        .collect();
    (mine.iter().sum(), mine.iter().copied().max().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_tree_is_measured() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let (total, single) = tree_rss(me);
        let _ = child.kill();
        let _ = child.wait();
        assert!(single > 0 && total > single, "{total} {single}");
    }
}
