//! The bench's output: one line per measurement while it runs, then markdown tables (printed,
//! and written between the markers of `docs/performance.md`), and raw JSON.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::targets::targets;
use super::{Measured, Results, Sample, Short, Timed, Tool};

pub const BEGIN: &str =
    "<!-- BEGIN GENERATED: `cargo xtask bench` rewrites everything up to the END marker -->";
pub const END: &str = "<!-- END GENERATED -->";

/// Where the figures came from.
#[derive(Debug, Clone, Default)]
pub struct MachineInfo {
    pub cpus: String,
    pub cpu_model: String,
    pub ram: String,
    pub kernel: String,
    pub nix: String,
    pub date: String,
    pub commit: String,
    pub load: String,
    pub busy: Vec<String>,
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

impl MachineInfo {
    pub fn collect(load: &str, busy: &[String]) -> MachineInfo {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_owned())
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let ram = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
            .unwrap_or_default();
        let root = fleet_testbed::repo_root();
        let root = root.to_string_lossy();
        let mut commit = sh("git", &["-C", &root, "rev-parse", "--short", "HEAD"]);
        // Only what goes into the fleet binary counts.
        let changed = sh(
            "git",
            &[
                "-C",
                &root,
                "status",
                "--porcelain",
                "--",
                "crates",
                "Cargo.lock",
            ],
        );
        if !changed.is_empty() {
            commit.push_str(" (with uncommitted changes in crates/)");
        }
        MachineInfo {
            cpus: sh("nproc", &[]),
            cpu_model,
            ram,
            kernel: sh("uname", &["-r"]),
            nix: sh("nix-store", &["--version"]),
            date: sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            commit,
            load: load.to_owned(),
            busy: busy.to_vec(),
        }
    }
}

pub(super) fn s(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

pub(super) fn mb(b: u64) -> String {
    format!("{:.1}", b as f64 / 1e6)
}

pub(super) fn ratio(a: Duration, b: Duration) -> Option<f64> {
    (b > Duration::ZERO).then(|| a.as_secs_f64() / b.as_secs_f64())
}

pub(super) fn times(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}×"))
}

fn link(rate: Option<u32>) -> String {
    rate.map_or("unlimited".into(), |r| format!("{r} Mbit/s"))
}

pub fn secs_list(v: &[Timed]) -> String {
    let l: Vec<String> = v
        .iter()
        .map(|t| format!("{}{}", s(t.wall), if t.noisy { " ⚠" } else { "" }))
        .collect();
    format!("{} s", l.join(" / "))
}

/// The median of each figure.
pub(super) fn median(v: &[Timed]) -> Timed {
    let mid = |f: fn(&Timed) -> Duration| {
        let mut x: Vec<Duration> = v.iter().map(f).collect();
        x.sort();
        x.get(x.len() / 2).copied().unwrap_or_default()
    };
    Timed {
        wall: mid(|t| t.wall),
        cpu: mid(|t| t.cpu),
        machine: mid(|t| t.machine),
        noisy: v.iter().any(|t| t.noisy),
    }
}

/// One line per measurement, while the bench runs.
pub fn line(smp: &Sample) -> String {
    let m = &smp.m;
    let mut l = format!(
        "{:<12} {:>2} host(s) {:<10} {:<36} wall {:>6} s  deployer CPU {:>6} s  machine CPU {:>6} s  sent {:>7} MB",
        smp.scenario,
        smp.hosts,
        link(smp.rate),
        smp.tool.label(smp.hosts).replace("\\|", "|"),
        s(m.wall),
        s(m.cpu),
        s(m.machine),
        mb(m.wire),
    );
    if smp.scenario == super::uplink::UPLINK {
        let _ = write!(l, "  uplink {} MB", mb(m.uplink));
    }
    if m.noisy {
        l.push_str("  (other work running: noisy)");
    }
    if let Some(f) = &m.fleet {
        let _ = write!(
            l,
            "  [prepare {} s, copy {} s, activate {} s]",
            s(f.prepare),
            s(f.copy),
            s(f.activate)
        );
    }
    l
}

pub(super) fn find<'a>(
    r: &'a Results,
    scenario: &str,
    hosts: usize,
    rate: Option<u32>,
    tool: Tool,
) -> Option<&'a Measured> {
    r.samples
        .iter()
        .find(|x| x.scenario == scenario && x.hosts == hosts && x.rate == rate && x.tool == tool)
        .map(|x| &x.m)
}

/// Groups of samples (scenario, hosts, link), in the order they ran.
fn groups(r: &Results) -> Vec<(&'static str, usize, Option<u32>)> {
    let mut g = Vec::new();
    for x in &r.samples {
        let k = (x.scenario, x.hosts, x.rate);
        if !g.contains(&k) {
            g.push(k);
        }
    }
    g
}

/// The generated part of docs/performance.md (also what the bench prints).
pub fn console(r: &Results) -> String {
    let mut o = String::new();
    let m = &r.machine;
    let _ = writeln!(
        o,
        "Latest run: **{}**, `{}` run ({} store paths, {} MB of shared closure per host), took {:.1} min.\n",
        m.date,
        r.scale.name,
        r.scale.paths,
        r.scale.total_mb,
        r.took.as_secs_f64() / 60.0
    );
    let _ = writeln!(o, "| machine | |\n|---|---|");
    let _ = writeln!(o, "| CPUs (nproc) | {} ({}) |", m.cpus, m.cpu_model);
    let _ = writeln!(o, "| RAM | {} |", m.ram);
    let _ = writeln!(o, "| kernel | {} |", m.kernel);
    let _ = writeln!(o, "| Nix | {} |", m.nix);
    let _ = writeln!(o, "| fleet | {} (release build) |", m.commit);
    let busy = if m.busy.is_empty() {
        "none seen".to_owned()
    } else {
        format!("**{}** (figures are noisy)", m.busy.join(", "))
    };
    let _ = writeln!(
        o,
        "| load at start | {} (other cargo/rustc/test processes: {busy}) |\n",
        m.load
    );

    let _ = writeln!(o, "### Targets\n");
    let _ = writeln!(o, "| target | goal | measured | met |\n|---|---|---|---|");
    for (what, goal, measured, met) in targets(r) {
        let _ = writeln!(
            o,
            "| {what} | {goal} | {measured} | {} |",
            match met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "-",
            }
        );
    }

    let _ = writeln!(o, "\n### Copies side by side\n");
    let _ = writeln!(
        o,
        "Wall: from start to the last host done (fleet: connect, read state, copy, activate, confirm; \
         the others: copy only). Deployer CPU: user + system time of the measured processes and \
         their children. Machine CPU: all busy CPU time of the machine (the simulated hosts' \
         sshd, `nix-store --import`, `zstd -dc` run on the same cores). Sent: bytes into the \
         hosts' links (all hosts, framing included). The last two columns: fleet's figure \
         divided by this row's.\n"
    );
    let _ = writeln!(
        o,
        "| scenario | hosts | link | tool | wall s | deployer CPU s | machine CPU s | sent MB | NAR MB | fleet ÷ this, wall | fleet ÷ this, CPU |\n\
         |---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (scenario, hosts, rate) in groups(r) {
        if scenario == "fresh" && !r.scale.fresh.contains(&hosts) {
            continue; // series-only runs go to the next table
        }
        let fleet = find(r, scenario, hosts, rate, Tool::Fleet);
        for x in r
            .samples
            .iter()
            .filter(|x| x.scenario == scenario && x.hosts == hosts && x.rate == rate)
        {
            let (rw, rc) = match (fleet, x.tool) {
                (Some(f), t) if t != Tool::Fleet => {
                    (times(ratio(f.wall, x.m.wall)), times(ratio(f.cpu, x.m.cpu)))
                }
                _ => (String::new(), String::new()),
            };
            let _ = writeln!(
                o,
                "| {scenario} | {hosts} | {} | {}{} | {} | {} | {} | {} | {} | {rw} | {rc} |",
                link(rate),
                x.tool.label(hosts),
                if x.m.noisy { " ⚠" } else { "" },
                s(x.m.wall),
                s(x.m.cpu),
                s(x.m.machine),
                mb(x.m.wire),
                mb(x.m.nar),
            );
        }
    }

    let _ = writeln!(o, "\n### fleet's phases\n");
    let _ = writeln!(
        o,
        "prepare: process start to the first copy (load the saved plan, read the local closure, \
         connect, read every host's state); copy: until the last host's copy ended; activate: \
         until the last host confirmed. Compressed: zstd bytes fleet wrote (all hosts).\n"
    );
    let _ = writeln!(
        o,
        "| scenario | hosts | link | tool | wall s | prepare s | copy s | activate s | NAR MB | compressed MB |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for x in &r.samples {
        if let Some(f) = &x.m.fleet {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {}{} | {} | {} | {} | {} | {} | {} |",
                x.scenario,
                x.hosts,
                link(x.rate),
                x.tool.label(x.hosts),
                if x.m.noisy { " ⚠" } else { "" },
                s(x.m.wall),
                s(f.prepare),
                s(f.copy),
                s(f.activate),
                mb(x.m.nar),
                mb(f.sent_compressed)
            );
        }
    }

    let _ = writeln!(
        o,
        "\n### Deployer CPU per host (fleet, fresh, unlimited links)\n"
    );
    let _ = writeln!(
        o,
        "| hosts | wall s | deployer CPU s | CPU per host s | machine CPU s |\n|---|---|---|---|---|"
    );
    for &n in &r.scale.series {
        if let Some(m) = find(r, "fresh", n, None, Tool::Fleet) {
            let _ = writeln!(
                o,
                "| {n}{} | {} | {} | {:.3} | {} |",
                if m.noisy { " ⚠" } else { "" },
                s(m.wall),
                s(m.cpu),
                m.cpu.as_secs_f64() / n as f64,
                s(m.machine)
            );
        }
    }

    if let Some(sh) = &r.short {
        let _ = writeln!(o, "\n### No-op apply and status on {} hosts\n", sh.hosts);
        let _ = writeln!(
            o,
            "Median of {} runs (all runs: apply {}, status {}). Evaluation excluded: `fleet apply \
             plan.json` of a plan in which every host is unchanged, and `fleet status --no-eval`. \
             With evaluation, for reference: `fleet plan` {} s, `fleet apply` {} s, `fleet status` {} s.\n",
            sh.noop_apply.len(),
            secs_list(&sh.noop_apply),
            secs_list(&sh.status),
            s(sh.plan_eval),
            s(sh.apply_eval),
            s(sh.status_eval),
        );
        let a = median(&sh.noop_apply);
        let st = median(&sh.status);
        let _ = writeln!(
            o,
            "| command | wall s | deployer CPU s | machine CPU s |\n|---|---|---|---|\n\
             | `fleet apply plan.json` (no-op) | {} | {} | {} |\n\
             | `fleet status --no-eval` | {} | {} | {} |",
            s(a.wall),
            s(a.cpu),
            s(a.machine),
            s(st.wall),
            s(st.cpu),
            s(st.machine)
        );
    }
    if let Some(e) = r.short.as_ref().map(|sh| &sh.eval) {
        o.push_str(&super::evaluation::section(e));
    }
    let noisy = r.samples.iter().any(|x| x.m.noisy)
        || r.short
            .as_ref()
            .is_some_and(|sh| sh.noop_apply.iter().chain(&sh.status).any(|t| t.noisy));
    if noisy {
        let _ = writeln!(
            o,
            "\n⚠: other work (cargo, rustc, test binaries) was running at the start or the end of \
             this measurement; its figures are noisy."
        );
    }
    o
}

/// Raw results for `target/bench/results.json`.
pub fn json(r: &Results) -> serde_json::Value {
    let secs = |d: Duration| d.as_secs_f64();
    let samples: Vec<serde_json::Value> = r
        .samples
        .iter()
        .map(|x| {
            serde_json::json!({
                "scenario": x.scenario,
                "hosts": x.hosts,
                "rate_mbit": x.rate,
                "tool": x.tool.label(x.hosts).replace("\\|", "|"),
                "wall_s": secs(x.m.wall),
                "deployer_cpu_s": secs(x.m.cpu),
                "machine_cpu_s": secs(x.m.machine),
                "sent_bytes": x.m.wire,
                "uplink_bytes": x.m.uplink,
                "nar_bytes": x.m.nar,
                "noisy": x.m.noisy,
                "fleet": x.m.fleet.as_ref().map(|f| serde_json::json!({
                    "prepare_s": secs(f.prepare),
                    "copy_s": secs(f.copy),
                    "activate_s": secs(f.activate),
                    "paths": f.paths,
                    "compressed_bytes": f.sent_compressed,
                })),
            })
        })
        .collect();
    let short = r.short.as_ref().map(|sh: &Short| {
        let runs = |v: &[Timed]| -> Vec<serde_json::Value> {
            v.iter()
                .map(|t| {
                    serde_json::json!({
                        "wall_s": secs(t.wall),
                        "cpu_s": secs(t.cpu),
                        "machine_cpu_s": secs(t.machine),
                    })
                })
                .collect()
        };
        serde_json::json!({
            "hosts": sh.hosts,
            "noop_apply": runs(&sh.noop_apply),
            "status_no_eval": runs(&sh.status),
            "plan_s": secs(sh.plan_eval),
            "apply_with_eval_s": secs(sh.apply_eval),
            "status_with_eval_s": secs(sh.status_eval),
            "evaluation": {
                "plan_cached": runs(&sh.eval.plan_cached),
                "plan_uncached_s": sh.eval.plan_uncached.map(|t| secs(t.wall)),
                "heavy_mb": sh.eval.heavy_mb,
                "limit_bytes": sh.eval.limit,
                "unlimited": sh.eval.unlimited.map(|m| serde_json::json!({
                    "wall_s": secs(m.wall), "peak_total_bytes": m.peak_total, "peak_process_bytes": m.peak_process,
                })),
                "limited": sh.eval.limited.map(|m| serde_json::json!({
                    "wall_s": secs(m.wall), "peak_total_bytes": m.peak_total, "peak_process_bytes": m.peak_process,
                })),
            },
        })
    });
    let m = &r.machine;
    serde_json::json!({
        "scale": r.scale.name,
        "took_s": secs(r.took),
        "machine": {
            "nproc": m.cpus, "cpu": m.cpu_model, "ram": m.ram, "kernel": m.kernel,
            "nix": m.nix, "date": m.date, "commit": m.commit, "load": m.load, "busy": m.busy,
        },
        "samples": samples,
        "short": short,
        "targets": targets(r).into_iter().map(|(w, g, me, ok)| serde_json::json!({
            "target": w, "goal": g, "measured": me, "met": ok,
        })).collect::<Vec<_>>(),
    })
}

/// Rewrites the generated part of `path` (creating the file around it if needed); the
/// hand-written rest stays as it is.
pub fn write_doc(path: &Path, r: &Results) -> super::Result<()> {
    let generated = format!("{BEGIN}\n\n{}\n{END}", console(r));
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{generated}{}", &old[..b], &old[e + END.len()..])
        }
        _ => format!("{}\n{generated}\n\n{}", SKELETON_HEAD, SKELETON_TAIL),
    };
    std::fs::write(path, new)?;
    Ok(())
}

const SKELETON_HEAD: &str = "# Performance\n\nfleet against what users run today, measured by `cargo xtask bench` (`just bench`) on the\nsimulated fleet (see [testing.md](testing.md)).\n\n## Latest figures\n";

const SKELETON_TAIL: &str =
    "## Where fleet misses a target\n\n(hand-written; `cargo xtask bench` leaves this alone)\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_part_is_replaced_and_the_rest_kept() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-doc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("performance.md");
        std::fs::write(
            &p,
            format!("head\n{BEGIN}\nold figures\n{END}\nhand-written\n"),
        )
        .unwrap();
        let r = Results {
            scale: super::super::Scale::quick(),
            samples: Vec::new(),
            short: None,
            machine: MachineInfo::default(),
            took: Duration::from_secs(60),
        };
        write_doc(&p, &r).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("head\n"));
        assert!(text.ends_with(&format!("{END}\nhand-written\n")));
        assert!(!text.contains("old figures"));
        assert!(text.contains("### Targets"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
