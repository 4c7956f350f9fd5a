//! The "after a nixpkgs bump" scenario (`--only-bump`, and part of the full run), and the quick
//! runner of the fresh-copy comparison on unlimited links (`--only-fresh`).
//!
//! After a bump: the hosts run the base system (fleet: deployed by fleet; nix-copy-closure:
//! imported directly; neither timed, on unlimited links), then every host's link is limited to
//! the scale's rate and the configuration changes to [`Variant::Bump`]: `fleet.massRebuild`
//! gives every store path a new hash while its bytes differ only where store paths are
//! embedded, and one package in ten is a new version (htop, and a tenth of the blobs with new
//! contents). fleet sends patches against the hosts' own paths (docs/deltas.md); the others
//! send every changed path whole.

use super::report::s;
use super::*;

/// A host's configuration after the bump.
pub(super) fn config(host: &str, s: &Scale) -> String {
    let new = (s.paths / 10).max(1);
    let kept = s.paths - new;
    let kept_mb = s.total_mb * kept / s.paths;
    let new_mb = s.total_mb - kept_mb;
    format!(
        "# fleet bench host (Bump); scale: {name}\n\
         {{ pkgs, ... }}: {{\n  networking.hostName = \"{host}\";\n  \
         environment.systemPackages = [ pkgs.htop pkgs.git pkgs.tmux ]\n    \
         ++ pkgs.benchBlobs {{ paths = {new}; totalMB = {new_mb}; seed = \"bump\"; offset = 3; }};\n  \
         fleet.bench = {{ paths = {kept}; totalMB = {kept_mb}; seed = \"0\"; }};\n  \
         fleet.massRebuild = \"bump\";\n  \
         fleet.packageVersions.htop = \"3.3.1\";\n}}\n",
        name = s.name,
    )
}

/// Limits every host's link of the bed to `rate` Mbit/s, both ways (`tc tbf`, as
/// `HostSpec::rate_mbit` does at start; the names are testing.md's).
fn limit_links(bed: &Bed, rate: u32) -> Result<()> {
    let n = bed.tb.instance();
    for (i, h) in bed.tb.hosts().iter().enumerate() {
        let outside = format!("flt{n}h{i}");
        for (ns, dev) in [(None, outside.as_str()), (Some(h.netns.as_str()), "eth0")] {
            let mut c = Command::new("tc");
            if let Some(ns) = ns {
                c.args(["-n", ns]);
            }
            c.args(["qdisc", "replace", "dev", dev, "root", "tbf", "rate"])
                .arg(format!("{rate}mbit"))
                .args(["burst", "64kb", "latency", "200ms"]);
            if !c.status()?.success() {
                return Err(format!("tc qdisc replace dev {dev} failed").into());
            }
        }
    }
    Ok(())
}

impl Ctx {
    fn record_rate(
        &mut self,
        scenario: &'static str,
        bed: &Bed,
        rate: u32,
        tool: Tool,
        m: Measured,
    ) {
        let smp = Sample {
            scenario,
            hosts: bed.names.len(),
            rate: Some(rate),
            tool,
            m,
        };
        eprintln!("xtask bench: {}", report::line(&smp));
        self.samples.push(smp);
    }

    /// fleet after the bump (`extra`: e.g. `--no-deltas`).
    fn bump_fleet(&mut self, n: usize, tool: Tool, extra: &[&str]) -> Result<()> {
        self.check()?;
        let rate = self.scale.rate;
        let mut bed = self.bed(n, None, Variant::Base)?;
        let plan = self.plan(&bed, "seed-plan")?;
        self.fleet_apply(&bed, &plan, "applied")?;
        let base = self.packages_of(&bed, Variant::Base)?;
        limit_links(&bed, rate)?;
        bed.set_variant(Variant::Bump)?;
        let plan = self.plan(&bed, "bump-plan")?;
        let bumped = self.packages_of(&bed, Variant::Bump)?;
        let mut m = self.fleet_apply_with(&bed, &plan, "applied", extra)?;
        m.nar = self.nar_to_send(&bumped, Some(&base))?;
        self.record_rate("bump", &bed, rate, tool, m);
        drop_bed(bed)
    }

    /// nix-copy-closure after the bump.
    fn bump_ncc(&mut self, n: usize, tool: Tool) -> Result<()> {
        self.check()?;
        let rate = self.scale.rate;
        let mut bed = self.bed(n, None, Variant::Base)?;
        let base = self.packages_of(&bed, Variant::Base)?;
        self.floor(&bed, &base)?;
        limit_links(&bed, rate)?;
        bed.set_variant(Variant::Bump)?;
        let bumped = self.packages_of(&bed, Variant::Bump)?;
        let nar = self.nar_to_send(&bumped, Some(&base))?;
        let mut m = self.ncc(&bed, &bumped, tool)?;
        m.nar = nar;
        self.record_rate("bump", &bed, rate, tool, m);
        drop_bed(bed)
    }

    /// The bump scenario: fleet and nix-copy-closure on one host and on the most hosts
    /// (parallel); `no_deltas`: also fleet `--no-deltas` on the most hosts.
    pub(super) fn bump(&mut self, no_deltas: bool) -> Result<()> {
        let max = self.scale.max_fresh();
        self.bump_fleet(1, Tool::Fleet, &[])?;
        self.bump_ncc(1, Tool::NccPar)?;
        self.bump_fleet(max, Tool::Fleet, &[])?;
        if no_deltas {
            self.bump_fleet(max, Tool::FleetNoDeltas, &["--no-deltas"])?;
        }
        self.bump_ncc(max, Tool::NccPar)
    }

    /// `--only-bump`.
    pub(super) fn run_bump(&mut self) -> Result<Option<Short>> {
        self.bump(true)?;
        Ok(None)
    }

    /// `--only-fresh`: the most hosts, fresh, unlimited links: fleet, fleet `--no-compress`
    /// and parallel nix-copy-closure, one after the other, `repeats` rounds; the median run of
    /// each is recorded (all runs are printed).
    pub(super) fn run_fresh(&mut self, repeats: usize) -> Result<Option<Short>> {
        let n = self.scale.max_fresh();
        let tools = [Tool::Fleet, Tool::FleetNoCompress, Tool::NccPar];
        let mut runs: Vec<Vec<Measured>> = vec![Vec::new(); tools.len()];
        let mut last_bed: Option<(usize, Option<u32>)> = None;
        for round in 0..repeats {
            for (k, &tool) in tools.iter().enumerate() {
                self.check()?;
                let before = self.samples.len();
                match tool {
                    Tool::NccPar => self.fresh_ncc(n, None, tool)?,
                    _ => drop_bed(self.fresh_fleet_with(n, None, tool)?)?,
                }
                let smp = self.samples.pop().expect("the run recorded a sample");
                debug_assert_eq!(self.samples.len(), before);
                eprintln!("xtask bench: round {}: {}", round + 1, report::line(&smp));
                last_bed = Some((smp.hosts, smp.rate));
                runs[k].push(smp.m);
            }
        }
        let (hosts, rate) = last_bed.unwrap_or((n, None));
        let mut summary = String::new();
        for (tool, mut ms) in tools.into_iter().zip(runs) {
            ms.sort_by_key(|m| m.wall);
            let walls: Vec<String> = ms.iter().map(|m| s(m.wall)).collect();
            summary.push_str(&format!(
                "  {}: {} s\n",
                tool.label(hosts),
                walls.join(" / ")
            ));
            let median = ms.swap_remove(ms.len() / 2);
            self.samples.push(Sample {
                scenario: "fresh",
                hosts,
                rate,
                tool,
                m: median,
            });
        }
        eprintln!("xtask bench: fresh, {hosts} hosts, unlimited, every run (sorted):\n{summary}");
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bump_keeps_nine_tenths_of_the_blobs_with_their_size() {
        for s in [Scale::quick(), Scale::full()] {
            let c = config("h1", &s);
            let new = s.paths / 10;
            let kept = s.paths - new;
            assert!(c.contains("fleet.massRebuild = \"bump\";"), "{c}");
            assert!(
                c.contains(&format!("fleet.bench = {{ paths = {kept};")),
                "{c}"
            );
            assert!(c.contains(&format!("benchBlobs {{ paths = {new};")), "{c}");
            // Same bytes per blob as the base system's.
            let kept_mb = s.total_mb * kept / s.paths;
            assert_eq!(kept_mb * s.paths, s.total_mb * kept, "{}", s.name);
            assert!(c.contains("packageVersions.htop"));
        }
    }
}
