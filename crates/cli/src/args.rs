//! The command line, as clap definitions. `--help`, the man page and the completions all come
//! from here.

use camino::Utf8PathBuf;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default for `--parallel`: hosts worked on at once. Deploys are network-bound, not CPU-bound.
pub const DEFAULT_PARALLEL: usize = 16;

/// Declarative NixOS fleet manager: build locally, copy once, activate everywhere.
#[derive(Debug, Parser)]
#[command(name = "fleet", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts, before or after the command name.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The inventory file.
    #[arg(
        long,
        short = 'f',
        global = true,
        value_name = "PATH",
        default_value = "fleet.toml",
        env = "FLEET_FILE"
    )]
    pub file: Utf8PathBuf,

    /// Which hosts: comma-separated names, globs (`web-*`, `pi?`) and tags (`@pi`); `!term`
    /// excludes (`@pi,!pi3`). May be repeated: the terms add up.
    #[arg(long, global = true, value_name = "SELECTOR", action = clap::ArgAction::Append)]
    pub on: Vec<String>,

    /// Machine-readable output on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    /// How many hosts to work on at once.
    #[arg(long, global = true, value_name = "N", default_value_t = DEFAULT_PARALLEL, value_parser = clap::value_parser!(usize))]
    pub parallel: usize,

    /// Run CMD (through `sh -c`) and use its first line of output as the sudo password, instead
    /// of asking on the terminal.
    #[arg(
        long,
        global = true,
        value_name = "CMD",
        env = "FLEET_SUDO_PASSWORD_COMMAND"
    )]
    pub sudo_password_command: Option<String>,

    /// Pass `--show-trace` to Nix evaluation: the whole trace of an evaluation error.
    #[arg(long, global = true)]
    pub show_trace: bool,

    /// Evaluate every host again, even those whose inputs did not change since their last
    /// evaluation (see docs/evaluation.md, "The evaluation cache").
    #[arg(long, global = true)]
    pub no_eval_cache: bool,

    /// At most this many Nix evaluation processes at once [default: from the memory available,
    /// at most 2].
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub eval_jobs: Option<u16>,

    /// Memory one Nix evaluation process may use (`4G`, `1500M`); a process that grows past it
    /// is stopped and its hosts are evaluated in smaller groups [default: the memory available
    /// shared by the jobs].
    #[arg(long, global = true, value_name = "SIZE", value_parser = parse_size)]
    pub eval_max_memory: Option<u64>,

    /// Trust and record the keys of hosts not yet in known_hosts (keys that changed are still refused).
    #[arg(long, global = true)]
    pub accept_new_host_keys: bool,

    /// Debug logs on stderr: SSH connection and authentication steps, remote commands, Nix
    /// commands, the activation helper (never the sudo password nor secrets). `-vv`: trace.
    #[arg(short = 'v', long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Colours in `plan`'s output: `auto` (stdout is a terminal and `NO_COLOR` is unset),
    /// `always` or `never`.
    #[arg(long, global = true, value_name = "WHEN", value_enum, default_value_t = ColorWhen::Auto)]
    pub color: ColorWhen,
}

/// When to colour output (`--color`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

impl GlobalArgs {
    /// The `--on` selector (every `--on` joined), or `None` for every host.
    pub fn selector(&self) -> Option<String> {
        (!self.on.is_empty()).then(|| self.on.join(","))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the selected hosts with their resolved settings.
    Hosts(HostsArgs),
    /// Build the selected hosts here (no host contacted); `--to URL` pushes their systems to a
    /// binary cache.
    Build(BuildArgs),
    /// Build the selected hosts and show what `apply` would change.
    Plan(PlanArgs),
    /// Build, copy and activate the selected hosts.
    Apply(ApplyArgs),
    /// Show what each host runs and whether it matches fleet.toml.
    Status(StatusArgs),
    /// Switch the selected hosts back to their previous generation (or `--to GEN`).
    Rollback(RollbackArgs),
    /// Run a command on the selected hosts, in parallel.
    Exec(ExecArgs),
    /// Show a host's last activation log, or a unit's journal.
    Logs(LogsArgs),
    /// List a host's system generations.
    Generations(GenerationsArgs),
    /// Show the package changes between two system generations of a host.
    Diff(DiffArgs),
    /// Delete old system generations on the selected hosts and collect garbage.
    Gc(GcArgs),
    /// Add an existing NixOS machine to fleet.toml (host key, hardware configuration).
    Add(AddArgs),
    /// Run the selected hosts' health checks (fleet.toml's `checks`) without changing anything.
    Check(CheckArgs),
    /// Reboot the selected hosts into their boot default (the system profile), wait for them,
    /// verify what they booted and run their checks.
    Reboot(RebootArgs),
    /// Manage the secrets of `[secrets.NAME]` (docs/secrets.md).
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Host names and `@tags` of fleet.toml, one a line (for the completion scripts).
    #[command(name = "__complete-selectors", hide = true)]
    CompleteSelectors(CompleteSelectorsArgs),
    /// Print the man page (roff).
    Man,
}

#[derive(Debug, Args)]
pub struct HostsArgs {}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Also copy each built system's closure to this Nix store URL (`nix copy --to`), e.g.
    /// `file:///srv/cache?secret-key=/etc/nix/cache.key` or `s3://bucket`, for hosts with
    /// `substitute = true`.
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Also save the plan as JSON, for `fleet apply FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<Utf8PathBuf>,

    /// Plan for this goal (what `fleet apply GOAL` would do; a saved plan is applied with it).
    #[arg(long, value_enum, default_value_t = Goal::Switch)]
    pub goal: Goal,

    /// Plan to activate the specialisation NAME (or `base`); see `fleet apply --specialisation`.
    #[arg(long, value_name = "NAME")]
    pub specialisation: Option<String>,

    /// Plan every copy direct from here: no host goes through its `relay` (docs/relay.md).
    #[arg(long)]
    pub no_relay: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// What to do: a goal (switch, boot, test, dry-activate; default switch), or a plan file
    /// saved by `fleet plan --out`, applied exactly or refused if a host changed since.
    #[arg(value_name = "GOAL|PLAN.json")]
    pub target: Option<String>,

    /// Do not wait for the host to confirm, and do not roll back when it cannot.
    #[arg(long)]
    pub no_rollback: bool,

    /// Seconds to wait for a host to confirm before rolling it back (default: the host's
    /// `confirm-timeout`).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub confirm_timeout: Option<u64>,

    /// Send store paths uncompressed over `nix-store --serve` (streamed into the store, less
    /// memory on the host) even to hosts that have zstd.
    #[arg(long)]
    pub no_compress: bool,

    /// zstd level of the compressed copy for every host (1-19). Default: fleet measures each
    /// host's link before a big copy and picks 1 on fast links, 3, or 6 on slow ones
    /// (docs/performance.md).
    #[arg(long, value_name = "LEVEL", value_parser = clap::value_parser!(i32).range(1..=19), conflicts_with = "no_compress")]
    pub zstd_level: Option<i32>,

    /// Send every path whole: no patches against the paths of the same packages the host has
    /// (docs/deltas.md).
    #[arg(long)]
    pub no_deltas: bool,

    /// Copy to every host directly from here: none goes through its `relay` (docs/relay.md).
    #[arg(long)]
    pub no_relay: bool,

    /// Roll a host back when switch-to-configuration reports failed units (its exit 4). By
    /// default the new system is kept and the units are reported, as nixos-rebuild does.
    #[arg(long)]
    pub rollback_on_failed_units: bool,

    /// Reinstall the bootloader (`NIXOS_INSTALL_BOOTLOADER=1`), as `nixos-rebuild
    /// --install-bootloader`.
    #[arg(long)]
    pub install_bootloader: bool,

    /// Activate the specialisation NAME of the new system (`TOPLEVEL/specialisation/NAME`), as
    /// `nixos-rebuild --specialisation`. A host that runs a specialisation keeps it when the new
    /// system has one of the same name; `--specialisation base` switches it to the base system.
    #[arg(long, value_name = "NAME")]
    pub specialisation: Option<String>,

    /// Do not ask for confirmation. On a terminal, fleet shows what it will do and asks once
    /// for all hosts; without a terminal on stdin it never asks.
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Roll out in waves of N hosts (or N% of the hosts to apply), one wave after the other.
    #[arg(long, value_name = "N|N%", value_parser = parse_batch)]
    pub batch: Option<Batch>,

    /// Apply these hosts first, alone (a selector, as `--on`); nothing else starts unless all
    /// of them succeed, health checks included.
    #[arg(long, value_name = "SELECTOR")]
    pub canary: Option<String>,

    /// Stop starting waves once K hosts have failed; the hosts not started are `skipped`.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_failures: Option<u64>,

    /// When the rollout stops early, roll back the hosts it already applied.
    #[arg(long)]
    pub rollback_succeeded: bool,

    /// Reboot the hosts whose change needs it (`--reboot`: new kernel, initrd, …, as the plan
    /// says) or every host applied (`--reboot=always`): the new system becomes the boot default
    /// (booted once first where systemd-boot allows), the host reboots, fleet waits for it,
    /// checks that it booted that system, runs its checks, then keeps it.
    #[arg(long, value_enum, value_name = "WHEN", num_args = 0..=1, require_equals = true, default_missing_value = "needed")]
    pub reboot: Option<RebootWhen>,

    /// Seconds to wait for a rebooted host to come back.
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub reboot_timeout: u64,
}

/// Which hosts `fleet apply --reboot` reboots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RebootWhen {
    /// Those whose change needs a reboot.
    Needed,
    /// Every host applied.
    Always,
}

/// The size of a wave: a number of hosts, or a percentage of the hosts to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    Hosts(usize),
    Percent(u8),
}

fn parse_batch(s: &str) -> Result<Batch, String> {
    let bad = || format!("`{s}` is not a number of hosts (N >= 1) or a percentage (1% to 100%)");
    match s.strip_suffix('%') {
        Some(p) => match p.parse::<u8>() {
            Ok(p) if (1..=100).contains(&p) => Ok(Batch::Percent(p)),
            _ => Err(bad()),
        },
        None => match s.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Batch::Hosts(n)),
            _ => Err(bad()),
        },
    }
}

/// What `fleet apply` does with the new system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Goal {
    /// Activate now and make it the boot default.
    Switch,
    /// Make it the boot default; activate on next boot.
    Boot,
    /// Activate now, without changing the boot default.
    Test,
    /// Show what activation would do.
    DryActivate,
}

/// The positional argument of `fleet apply`, interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyTarget {
    Goal(Goal),
    Plan(Utf8PathBuf),
}

impl ApplyArgs {
    /// A goal name is a goal; anything else is the path of a saved plan.
    pub fn target(&self) -> ApplyTarget {
        match self.target.as_deref() {
            None => ApplyTarget::Goal(Goal::Switch),
            Some(t) => match Goal::from_str(t, false) {
                Ok(goal) => ApplyTarget::Goal(goal),
                Err(_) => ApplyTarget::Plan(Utf8PathBuf::from(t)),
            },
        }
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only ask the hosts; do not evaluate fleet.toml's configurations to compare.
    #[arg(long)]
    pub no_eval: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Go to this system profile generation (`fleet generations HOST` lists them) instead of
    /// the previous one.
    #[arg(long, value_name = "GEN")]
    pub to: Option<u64>,

    /// Do not ask for confirmation. On a terminal, fleet shows what it will do and asks once
    /// for all hosts; without a terminal on stdin it never asks.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Upload the selected hosts' secrets without building or activating (after a reboot
    /// emptied /run/keys), and delete those that no longer go to them.
    Push,
}

#[derive(Debug, Args)]
pub struct CheckArgs {}

#[derive(Debug, Args)]
pub struct RebootArgs {
    /// Seconds to wait for a host to come back.
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Run the command as root (through the host's `sudo` setting; a sudo password is asked
    /// once for the run).
    #[arg(long)]
    pub sudo: bool,

    /// Prefix every output line with the host name instead of grouping output per host.
    #[arg(long)]
    pub prefix: bool,

    /// The command and its arguments, after `--`. Each word reaches the remote command as
    /// one argument (quoted for the remote shell); for a pipeline use `sh -c '...'`.
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The host (as named in fleet.toml).
    pub host: String,

    /// The log of the last activation (the default).
    #[arg(long, conflicts_with = "unit")]
    pub activation: bool,

    /// The journal of this systemd unit (`journalctl -u NAME`) instead.
    #[arg(long, value_name = "NAME")]
    pub unit: Option<String>,

    /// How many lines, from the end.
    #[arg(short = 'n', long, value_name = "LINES", default_value_t = 200)]
    pub lines: u32,
}

#[derive(Debug, Args)]
pub struct GenerationsArgs {
    /// The host (as named in fleet.toml).
    pub host: String,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The host (as named in fleet.toml).
    pub host: String,
    /// The older generation (`fleet generations HOST` lists them).
    #[arg(value_name = "GEN1")]
    pub from: u64,
    /// The newer generation.
    #[arg(value_name = "GEN2")]
    pub to: u64,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Keep generations younger than this (`30d`, `12h`, `2w`; units s, m, h, d, w). Without
    /// it every old generation goes, as with `nix-collect-garbage -d`.
    #[arg(long, value_name = "AGE")]
    pub older_than: Option<String>,

    /// Only say which generations would be deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The new host's name in fleet.toml.
    pub name: String,

    /// Its address (name or IP) for SSH.
    #[arg(long, value_name = "ADDRESS")]
    pub address: String,

    /// Its Nix system (default: from `uname -m` on the machine).
    #[arg(long, value_name = "SYSTEM")]
    pub system: Option<String>,

    /// The SSH login user (default: root, or `~/.ssh/config`).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// The SSH port (default: 22, or `~/.ssh/config`).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// Accept the host key shown without asking (check its fingerprint out of band).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct CompleteSelectorsArgs {
    /// Host names only, no tags.
    #[arg(long)]
    pub names: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to generate completions for.
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_work_after_the_command() {
        let cli = Cli::try_parse_from(["fleet", "hosts", "--on", "@pi", "--json", "-f", "x.toml"])
            .unwrap();
        assert_eq!(cli.global.selector().as_deref(), Some("@pi"));
        assert!(cli.global.json);
        assert_eq!(cli.global.file, "x.toml");
        assert_eq!(cli.global.parallel, DEFAULT_PARALLEL);
        let cli = Cli::try_parse_from(["fleet", "hosts", "--on", "@pi", "--on", "!pi3"]).unwrap();
        assert_eq!(cli.global.selector().as_deref(), Some("@pi,!pi3"));
        let cli = Cli::try_parse_from(["fleet", "hosts"]).unwrap();
        assert_eq!(cli.global.selector(), None);
        assert_eq!((cli.global.verbose, cli.global.color), (0, ColorWhen::Auto));
        let cli = Cli::try_parse_from(["fleet", "plan", "-vv", "--color", "never"]).unwrap();
        assert_eq!(
            (cli.global.verbose, cli.global.color),
            (2, ColorWhen::Never)
        );
        assert!(Cli::try_parse_from(["fleet", "plan", "--color", "sometimes"]).is_err());
    }

    #[test]
    fn apply_target_is_a_goal_or_a_plan() {
        let target = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Apply(a) => a.target(),
            other => panic!("{other:?}"),
        };
        assert_eq!(target(&["fleet", "apply"]), ApplyTarget::Goal(Goal::Switch));
        assert_eq!(
            target(&["fleet", "apply", "dry-activate"]),
            ApplyTarget::Goal(Goal::DryActivate)
        );
        assert_eq!(
            target(&["fleet", "apply", "plan.json"]),
            ApplyTarget::Plan("plan.json".into())
        );
    }
}

/// `4G`, `1500M`, `512K` or bytes (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size (like 4G, 1500M or 512K)"))?;
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("`{s}`: the unit must be K, M, G or T")),
    };
    n.checked_mul(1 << shift)
        .filter(|&b| b >= 64 << 20)
        .ok_or_else(|| format!("`{s}`: between 64M and a few terabytes"))
}

#[cfg(test)]
mod size_tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("1500M"), Ok(1500 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1073741824"), Ok(1 << 30));
        assert!(parse_size("10M").is_err(), "too small to evaluate anything");
        assert!(parse_size("4X").is_err());
        assert!(parse_size("G").is_err());
    }
}
