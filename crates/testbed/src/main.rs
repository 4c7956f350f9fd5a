//! `fleet-testbed`: start, list, stop and clean up simulated fleets by hand.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fleet_testbed::{instance, HostSpec, Testbed};

/// Simulated NixOS hosts (network + mount namespaces, private /nix, real sshd) on this machine.
#[derive(Parser)]
#[command(name = "fleet-testbed", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start hosts and keep them until Ctrl-C (or `fleet-testbed stop N`), then tear down.
    Start {
        /// Hosts as NAME[:SYSTEM][:sudo][:RATEmbit][:trixie|:sid], e.g. `pi1:aarch64-linux`
        /// `nas::sudo` `new::sid` (sid: Nix 2.34 and OpenSSH 10 on the host).
        #[arg(required = true)]
        hosts: Vec<String>,
        /// Leave `extra-platforms` out of the printed NIX_CONFIG.
        #[arg(long)]
        no_extra_platforms: bool,
    },
    /// List instances on this machine (alive or dead).
    List,
    /// Stop a running instance (signals its owner), or clean it up if its owner is dead.
    Stop { instance: u32 },
    /// Remove what dead instances left behind (after a crashed test).
    Cleanup,
    /// Install what is missing and create the sudo user (as `cargo xtask setup`).
    Setup,
}

fn parse_host(s: &str) -> Result<HostSpec, String> {
    let mut parts = s.split(':');
    let mut spec = HostSpec::new(parts.next().unwrap_or_default());
    for part in parts {
        match part {
            "" => {}
            "sudo" => spec = spec.sudo_password(),
            "trixie" => spec = spec.userland(fleet_testbed::Userland::Trixie),
            "sid" => spec = spec.userland(fleet_testbed::Userland::Sid),
            p if p.ends_with("mbit") => {
                let rate = p
                    .trim_end_matches("mbit")
                    .parse()
                    .map_err(|_| format!("bad rate `{p}` in `{s}`"))?;
                spec = spec.rate_mbit(rate);
            }
            p if p.contains('-') => spec = spec.system(p),
            p => return Err(format!("unknown option `{p}` in `{s}`")),
        }
    }
    Ok(spec)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet-testbed: error: {e}");
            let mut source = std::error::Error::source(&*e);
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Cmd::Setup => {
            let r = fleet_testbed::ensure_prerequisites()?;
            if r.installed.is_empty() {
                eprintln!("fleet-testbed: all prerequisites present");
            } else {
                eprintln!("fleet-testbed: installed {}", r.installed.join(" "));
            }
        }
        Cmd::List => {
            let list = instance::list()?;
            if list.is_empty() {
                println!("no testbed instances");
            }
            for i in list {
                println!(
                    "{:>3}  {:<5}  pid {:<8}  {}",
                    i.number,
                    if i.alive { "alive" } else { "dead" },
                    i.owner_pid.map(|p| p.to_string()).unwrap_or("-".into()),
                    i.namespaces.join(" ")
                );
            }
        }
        Cmd::Cleanup => {
            let cleaned = instance::cleanup_dead()?;
            if cleaned.is_empty() {
                println!("nothing to clean up");
            } else {
                println!("cleaned up instances {cleaned:?}");
            }
        }
        Cmd::Stop { instance: n } => match instance::try_lock(n)? {
            Some(lock) => {
                drop(lock);
                instance::cleanup_dead()?;
                println!("instance {n} was not running; cleaned up");
            }
            None => {
                let pid =
                    instance::owner_pid(n).ok_or("instance is locked but has no owner pid")?;
                // SAFETY: kill(2) on the pid the instance's owner wrote into its lock file.
                unsafe { libc_kill(pid) };
                for _ in 0..300 {
                    std::thread::sleep(Duration::from_millis(100));
                    if let Some(lock) = instance::try_lock(n)? {
                        drop(lock);
                        instance::cleanup_dead()?;
                        println!("instance {n} stopped");
                        return Ok(());
                    }
                }
                return Err(format!("instance {n} (pid {pid}) did not stop within 30 s").into());
            }
        },
        Cmd::Start {
            hosts,
            no_extra_platforms,
        } => {
            let specs = hosts
                .iter()
                .map(|s| parse_host(s))
                .collect::<Result<Vec<_>, _>>()?;
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))?;
            let tb = Testbed::builder()
                .hosts(specs)
                .extra_platforms((!no_extra_platforms).then_some("aarch64-linux"))
                .start()?;
            print_info(&tb);
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
            }
            eprintln!("fleet-testbed: tearing down instance {}", tb.instance());
            tb.teardown()?;
        }
    }
    Ok(())
}

unsafe fn libc_kill(pid: u32) {
    // SAFETY: forwarded from the caller.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
}

fn print_info(tb: &Testbed) {
    println!(
        "instance {} (bridge fltbr{}, deployer {}), started in {:.2?}",
        tb.instance(),
        tb.instance(),
        tb.deployer_address(),
        tb.timings().total
    );
    println!("state dir   {}", tb.state_dir().display());
    println!("client key  {}", tb.client_key_path().display());
    println!("known_hosts {}", tb.known_hosts_path().display());
    println!(
        "sudo user   {} (password {})",
        tb.sudo_user(),
        tb.sudo_password()
    );
    for (k, v) in tb.nix_env() {
        println!("export {k}={v:?}");
    }
    for h in tb.hosts() {
        println!(
            "{:<12} {:<15} {:<14} ssh {} {}  |  nsenter -t $(ip netns pids {} | head -1) -m -n sh",
            h.name,
            h.address,
            h.system,
            tb.nix_sshopts(),
            h.ssh_target(),
            h.netns
        );
    }
    println!(
        "Ctrl-C (or `fleet-testbed stop {}`) tears down.",
        tb.instance()
    );
}
