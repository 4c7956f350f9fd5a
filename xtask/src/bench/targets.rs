//! The targets the bench checks (the issues' goals), each a row of the "Targets" table:
//! (what, goal, measured, met).

use std::time::Duration;

use super::report::{find, mb, median, ratio, s, times};
use super::{Measured, Results, Tool};

/// One row: what, goal, measured, met (`None`: not measurable).
pub(super) type Target = (String, String, String, Option<bool>);

/// fleet's `a` against the other tool's `b` (wall or CPU time): met at `a ÷ b ≤ goal`.
/// `extra` follows the two figures in the measured column.
fn ratio_row(what: String, goal: f64, a: Duration, b: Duration, extra: &str) -> Target {
    let q = ratio(a, b);
    (
        what,
        format!("≤ {goal:.2}×"),
        format!("{} ({} s vs {} s{extra})", times(q), s(a), s(b)),
        q.map(|q| q <= goal),
    )
}

/// fleet's and the other tool's run of one scenario, when both ran.
fn pair<'a>(
    r: &'a Results,
    scenario: &str,
    hosts: usize,
    rate: Option<u32>,
    fleet: Tool,
    other: Tool,
) -> Option<(&'a Measured, &'a Measured)> {
    Some((
        find(r, scenario, hosts, rate, fleet)?,
        find(r, scenario, hosts, rate, other)?,
    ))
}

/// Every target whose runs are in `r`.
pub(super) fn targets(r: &Results) -> Vec<Target> {
    let mut t = Vec::new();
    let n = r.scale.max_fresh();
    if let Some((f, fl)) = pair(r, "fresh", n, None, Tool::Fleet, Tool::Floor) {
        let what = format!("{n} hosts fresh: fleet wall ÷ floor wall");
        t.push(ratio_row(what, 1.10, f.wall, fl.wall, ""));
    }
    if let Some((f, p)) = pair(r, "fresh", n, None, Tool::Fleet, Tool::NccPar) {
        let what = format!("{n} hosts fresh: fleet deployer CPU ÷ parallel nix-copy-closure's");
        t.push(ratio_row(what, 0.30, f.cpu, p.cpu, ""));
    }
    let rate = Some(r.scale.rate);
    for &h in &r.scale.fresh {
        if let Some((f, p)) = pair(r, "fresh", h, rate, Tool::Fleet, Tool::NccPar) {
            let what = format!(
                "{h} host(s), {} Mbit/s: fleet wall ÷ {}'s",
                r.scale.rate,
                Tool::NccPar.label(h)
            );
            t.push(ratio_row(what, 0.45, f.wall, p.wall, ""));
        }
    }
    let up = Some(r.scale.uplink);
    let uplink = super::uplink::UPLINK;
    if let Some((f, p)) = pair(r, uplink, n, up, Tool::FleetRelay, Tool::NccPar) {
        let what = format!(
            "{n} hosts behind one {} Mbit/s uplink: fleet with a relay, wall ÷ parallel nix-copy-closure's",
            r.scale.uplink
        );
        let carried = format!(
            "; uplink carried {} MB vs {} MB",
            mb(f.uplink),
            mb(p.uplink)
        );
        t.push(ratio_row(what, 0.15, f.wall, p.wall, &carried));
    }
    if let Some((f, p)) = pair(r, "fresh", n, None, Tool::Fleet, Tool::NccPar) {
        let what = format!("{n} hosts fresh, unlimited: fleet wall ÷ parallel nix-copy-closure's");
        t.push(ratio_row(what, 0.90, f.wall, p.wall, ""));
    }
    for h in [1, n] {
        if let Some((f, p)) = pair(r, "bump", h, rate, Tool::Fleet, Tool::NccPar) {
            let what = format!(
                "after a nixpkgs bump, {h} host(s), {} Mbit/s: fleet wall ÷ {}'s",
                r.scale.rate,
                Tool::NccPar.label(h)
            );
            t.push(ratio_row(what, 0.10, f.wall, p.wall, ""));
        }
    }
    if let Some(sh) = r.short.as_ref().filter(|sh| !sh.noop_apply.is_empty()) {
        let aw = median(&sh.noop_apply).wall;
        let sw = median(&sh.status).wall;
        t.push((
            format!("no-op apply of {} hosts (saved plan)", sh.hosts),
            "≤ 1.5 s".into(),
            format!("{} s", s(aw)),
            Some(aw <= Duration::from_millis(1500)),
        ));
        t.push((
            format!("`fleet status --no-eval` of {} hosts", sh.hosts),
            "≤ 1 s".into(),
            format!("{} s", s(sw)),
            Some(sw <= Duration::from_secs(1)),
        ));
    }
    if let Some(sh) = &r.short {
        let e = &sh.eval;
        if !e.plan_cached.is_empty() {
            let pw = median(&e.plan_cached).wall;
            t.push((
                format!("no-op `fleet plan` of {} hosts, evaluation cached", e.hosts),
                "≤ 1.0 s".into(),
                format!("{} s", s(pw)),
                Some(pw <= Duration::from_secs(1)),
            ));
        }
        if let Some(l) = e.limited {
            t.push((
                format!(
                    "heavy evaluation of {} hosts ({} MB each): peak memory of one evaluation process",
                    e.hosts, e.heavy_mb
                ),
                format!("≤ the limit, {} MB (+ 25 ms of growth)", e.limit >> 20),
                format!("{} MB", l.peak_process >> 20),
                Some(l.peak_process <= e.limit + (e.limit / 10)),
            ));
        }
    }
    t
}
