//! `cargo xtask <setup|test|demo|bench>`: the project's scripts, in Rust so a fresh machine needs
//! only the Rust toolchain.
//!
//! # Layout
//! - `setup`: [`fleet_testbed::ensure_prerequisites`] (apt-get what is missing, the sudo user),
//!   then the userland roots of the Nix matrix ([`fleet_testbed::userland::ensure_roots`]).
//! - `test`: setup, then `cargo test --workspace` (or the packages given with `-p`) with the deployer's `NIX_CONFIG`.
//! - `demo`: setup, a 3-host simulated fleet, `fleet hosts|plan|apply|status` against it, one
//!   configuration change and `plan|apply|status` again, teardown.
//! - `graph`: the crate graph of docs/architecture.md, from `cargo metadata` (module `graph`).
//! - `bench`: fleet against `nix-copy-closure` (sequential, parallel) and the no-SSH floor on the
//!   simulated fleet; prints ratios and rewrites the figures of `docs/performance.md`
//!   (module `bench`).

mod bench;
mod demo_flake;
mod graph;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fleet_testbed::{nix_config, repo_root, HostSpec, Testbed};

const USAGE: &str = "usage: cargo xtask <command> [args]

commands:
  setup            install what the tests and the demo need (apt-get, as root), create the sudo user,
                   build the Debian trixie/sid roots of the Nix matrix (cached)
  test [ARGS...]   setup, then `cargo test --workspace ARGS...` (the CI command)
  demo             start a 3-host simulated fleet and run fleet against it
  graph [--check|--write]
                   the workspace's crate graph (docs/architecture.md holds it; --check fails when
                   the document differs, --write updates it)
  bench [--quick]  fleet vs nix-copy-closure vs the floor on a simulated fleet (release build);
                   a full run (about 8 min) rewrites the figures in docs/performance.md,
                   --quick is a 1-minute smoke run that writes nothing";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let command = args.next().map(|a| a.to_string_lossy().into_owned());
    let rest: Vec<OsString> = args.collect();
    let result = match command.as_deref() {
        Some("setup") => setup().and_then(|()| roots()).map(|()| ExitCode::SUCCESS),
        Some("test") => test(&rest),
        Some("demo") => demo(),
        Some("bench") => bench::run(&rest),
        Some("graph") => {
            let rest: Vec<String> = rest
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            graph::run(&repo_root(), &rest)
                .map(|ok| {
                    if ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                })
                .map_err(|e| e.into())
        }
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            eprintln!("{USAGE}");
            Ok(ExitCode::from(2))
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("xtask: error: {e}");
        let mut source = e.source();
        while let Some(s) = source {
            eprintln!("  caused by: {s}");
            source = s.source();
        }
        ExitCode::FAILURE
    })
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn setup() -> Result<()> {
    eprintln!("xtask: checking prerequisites (root, nix-bin, openssh-server, sudo, iproute2, ...)");
    let report = fleet_testbed::ensure_prerequisites()?;
    if report.installed.is_empty() {
        eprintln!("xtask: all packages present");
    } else {
        eprintln!("xtask: installed {}", report.installed.join(" "));
    }
    if report.created_sudo_user {
        eprintln!("xtask: created the sudo user {}", fleet_testbed::SUDO_USER);
    }
    let cleaned = fleet_testbed::instance::cleanup_dead()?;
    if !cleaned.is_empty() {
        eprintln!("xtask: removed leftovers of dead testbed instances {cleaned:?}");
    }
    Ok(())
}

/// The userland roots of the Nix version matrix (Debian trixie and sid), built once and cached;
/// an unreachable Debian registry is reported and skipped (the matrix tests then skip too).
fn roots() -> Result<()> {
    let dir = fleet_testbed::userland::roots_dir();
    eprintln!(
        "xtask: userland roots for the Nix matrix in {} (debootstrap on first use, a few minutes)",
        dir.display()
    );
    let started = std::time::Instant::now();
    for (u, r) in fleet_testbed::userland::ensure_roots() {
        match r {
            Ok(Some(root)) => match root.built_in {
                Some(t) => eprintln!("xtask: built {u}: {} in {t:.0?}", root.nix_version),
                None => eprintln!("xtask: {u}: {} (cached)", root.nix_version),
            },
            Ok(None) => {}
            Err(e @ fleet_testbed::Error::RegistryUnreachable { .. }) => {
                eprintln!("xtask: warning: {e}; the tests on {u} will be skipped");
            }
            Err(e) => return Err(e.into()),
        }
    }
    eprintln!("xtask: roots ready in {:.1?}", started.elapsed());
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(repo_root());
    c
}

fn test(args: &[OsString]) -> Result<ExitCode> {
    setup()?;
    roots()?;
    // `--workspace` would override a `-p`/`--package` given by the user.
    let picks_packages = args.iter().any(|a| {
        let a = a.to_string_lossy();
        a == "-p" || a.starts_with("--package") || (a.starts_with("-p") && a.len() > 2)
    });
    let mut c = cargo();
    c.arg("test");
    if !picks_packages {
        c.arg("--workspace");
    }
    // Nothing is printed after cargo: its summary lines end the output.
    let status = c
        .args(args)
        .env("NIX_CONFIG", nix_config(Some("aarch64-linux")))
        .status()?;
    Ok(exit_code(status.code()))
}

fn exit_code(code: Option<i32>) -> ExitCode {
    ExitCode::from(code.map_or(1, |c| u8::try_from(c).unwrap_or(1)))
}

fn demo() -> Result<ExitCode> {
    setup()?;
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))?;

    eprintln!("xtask: building fleet");
    let status = cargo()
        .args(["build", "--quiet", "-p", "fleet", "--bin", "fleet"])
        .status()?;
    if !status.success() {
        return Ok(exit_code(status.code()));
    }
    let fleet = target_dir().join("debug/fleet");

    eprintln!("xtask: starting the simulated fleet: pi1, pi2 (aarch64-linux, root), nas (x86_64-linux, sudo with password)");
    let tb = Testbed::builder()
        .host(HostSpec::new("pi1").system("aarch64-linux").tag("pi"))
        .host(
            HostSpec::new("pi2")
                .system("aarch64-linux")
                .tag("pi")
                .rate_mbit(50),
        )
        .host(
            HostSpec::new("nas")
                .system("x86_64-linux")
                .tag("storage")
                .sudo_password(),
        )
        .start()?;
    eprintln!(
        "xtask: testbed instance {} up in {:.2?}",
        tb.instance(),
        tb.timings().total
    );
    for h in tb.hosts() {
        eprintln!(
            "  {:<4} {:<14} {:<14} as {:<9} (inspect: ip netns exec {} ..., or `ssh {} {}`)",
            h.name,
            h.address,
            h.system,
            h.user,
            h.netns,
            tb.nix_sshopts(),
            h.ssh_target()
        );
    }

    let dir = tb.state_dir().join("demo");
    std::fs::create_dir_all(&dir)?;
    for h in tb.hosts() {
        let packages = if h.name == "nas" {
            "pkgs.git pkgs.tmux"
        } else {
            "pkgs.htop"
        };
        let host_dir = dir.join(&h.name);
        std::fs::create_dir_all(&host_dir)?;
        std::fs::write(
            host_dir.join("configuration.nix"),
            format!(
                "{{ pkgs, ... }}: {{\n  networking.hostName = \"{}\";\n  environment.systemPackages = [ {packages} ];\n}}\n",
                h.name
            ),
        )?;
    }
    let toml = tb.fleet_toml(&fleet_testbed::nixpkgs_standin(), |h| {
        dir.join(&h.name).join("configuration.nix")
    });
    std::fs::write(dir.join("fleet.toml"), &toml)?;
    // pi2's system comes from a flake (its nixosConfigurations.pi2), the others' from the pin.
    demo_flake::make(&dir, &fleet_testbed::nixpkgs_standin(), &tb.nix_env())?;
    let toml = std::fs::read_to_string(dir.join("fleet.toml"))?;
    eprintln!(
        "xtask: wrote {} (pi2 from {}):\n{toml}",
        dir.join("fleet.toml").display(),
        dir.join("flake/flake.nix").display()
    );

    // Round 1: from empty hosts to running systems. Round 2: one host's configuration changes
    // (a package added, one upgraded): the plan shows just that, and apply does just that.
    let nas_config = dir.join("nas").join("configuration.nix");
    let steps: &[&[&str]] = &[
        &["hosts"],
        &["plan"],
        &["apply"],
        &["status"],
        &["edit"],
        &["plan"],
        &["apply"],
        &["status"],
    ];
    let mut code = ExitCode::SUCCESS;
    for args in steps {
        if interrupted.load(Ordering::SeqCst) {
            break;
        }
        if args[0] == "edit" {
            let text = "{ pkgs, ... }: {\n  networking.hostName = \"nas\";\n  \
                        environment.systemPackages = [ pkgs.git pkgs.tmux pkgs.jq ];\n  \
                        fleet.packageVersions.openssl = \"3.0.14\";\n}\n";
            std::fs::write(&nas_config, text)?;
            eprintln!(
                "\nxtask: changed {}: added jq, openssl 3.0.13 → 3.0.14",
                nas_config.display()
            );
            continue;
        }
        eprintln!("\n$ fleet {}", args.join(" "));
        let status = Command::new(&fleet)
            .args(*args)
            .current_dir(&dir)
            .envs(tb.nix_env())
            .env(
                "FLEET_SUDO_PASSWORD_COMMAND",
                format!("printf '%s\\n' '{}'", tb.sudo_password()),
            )
            .stdin(Stdio::null())
            .status()?;
        if !status.success() {
            eprintln!(
                "xtask: `fleet {}` failed (exit {:?})",
                args.join(" "),
                status.code()
            );
            code = exit_code(status.code());
            break;
        }
    }
    if interrupted.load(Ordering::SeqCst) {
        eprintln!("xtask: interrupted");
        code = ExitCode::from(130);
    }
    eprintln!("xtask: tearing down the simulated fleet");
    tb.teardown()?;
    Ok(code)
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                repo_root().join(dir)
            }
        }
        None => repo_root().join("target"),
    }
}
