//! Testbeds with a fleet directory, and the tools measured on them: fleet, nix-copy-closure,
//! the import floor.

use super::*;

impl Ctx {
    pub(super) fn bed(&mut self, n: usize, rate: Option<u32>, variant: Variant) -> Result<Bed> {
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
    pub(super) fn plan(&mut self, bed: &Bed, what: &str) -> Result<PathBuf> {
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
    pub(super) fn packages_of(&mut self, bed: &Bed, variant: Variant) -> Result<Vec<String>> {
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

    pub(super) fn closure(&mut self, package: &str) -> Result<Vec<String>> {
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
    pub(super) fn nar_to_send(
        &mut self,
        packages: &[String],
        have: Option<&[String]>,
    ) -> Result<u64> {
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
    pub(super) fn fleet_apply(&mut self, bed: &Bed, plan: &Path, expect: &str) -> Result<Measured> {
        self.fleet_apply_with(bed, plan, expect, &[])
    }

    pub(super) fn fleet_apply_with(
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
    pub(super) fn fleet_simple(&mut self, bed: &Bed, args: &[&str], what: &str) -> Result<Timed> {
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
    pub(super) fn ncc(&mut self, bed: &Bed, packages: &[String], tool: Tool) -> Result<Measured> {
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
    pub(super) fn floor(&mut self, bed: &Bed, packages: &[String]) -> Result<Measured> {
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
    pub(super) fn write_configs(&self) -> Result<()> {
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

    pub(super) fn set_variant(&mut self, v: Variant) -> Result<()> {
        self.variant = v;
        self.write_configs()
    }

    pub(super) fn fleet(&self, bin: &Path, args: &[&str]) -> Command {
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

    pub(super) fn wire(&self) -> u64 {
        (0..self.names.len())
            .map(|i| veth_tx(self.tb.instance(), i))
            .sum()
    }

    /// A process in host `i`'s namespaces (they all share its private mount namespace).
    pub(super) fn holder_pid(&self, i: usize) -> Result<u32> {
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
pub(super) fn tmpfs_fits(hosts: usize, mb: u32) -> bool {
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

pub(super) fn drop_bed(bed: Bed) -> Result<()> {
    bed.tb.teardown()?;
    Ok(())
}

/// A host's configuration of the nixpkgs stand-in.
pub(super) fn config(host: &str, variant: Variant, s: &Scale) -> String {
    if variant == Variant::Bump {
        return super::bump::config(host, s);
    }
    let update = match variant {
        Variant::Base | Variant::Bump => String::new(),
        Variant::Update => format!(
            "\n    ++ [ pkgs.jq ]\n    ++ pkgs.benchBlobs {{ paths = {}; totalMB = {}; seed = \"update\"; }}",
            s.update_paths, s.update_mb
        ),
    };
    let versions = match variant {
        Variant::Base | Variant::Bump => "",
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
pub(super) struct Probe {
    start: Instant,
    machine: Duration,
    wire: u64,
    uplink: u64,
    noisy: bool,
}

impl Probe {
    pub(super) fn start(bed: &Bed) -> Probe {
        // Write back what earlier runs left dirty (gigabytes of imported store paths), so the
        // kernel's writeback does not run during this measurement.
        // SAFETY: sync(2) has no preconditions.
        unsafe { libc::sync() };
        Probe {
            noisy: !measure::busy_processes().is_empty(),
            wire: bed.wire(),
            uplink: bed.tb.uplink_tx_bytes(),
            machine: machine_busy(),
            start: Instant::now(),
        }
    }

    pub(super) fn finish(self, bed: &Bed, cpu: Duration) -> Measured {
        let wall = self.start.elapsed();
        Measured {
            wall,
            cpu,
            machine: machine_busy().saturating_sub(self.machine),
            wire: bed.wire().saturating_sub(self.wire),
            uplink: bed.tb.uplink_tx_bytes().saturating_sub(self.uplink),
            noisy: self.noisy || !measure::busy_processes().is_empty(),
            ..Measured::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
