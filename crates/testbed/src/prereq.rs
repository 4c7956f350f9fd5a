//! Making a fresh Debian machine ready: packages, the sudo user, mount points, a namespace probe.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::cmd::{cmd, describe, on_path, output, run};
use crate::error::{Error, Result};
use crate::instance::LOCK_DIR;

/// The non-root user every simulated host knows; it logs in with the testbed's key and needs
/// its password for `sudo`.
pub const SUDO_USER: &str = "fltbsudo";
/// The password of [`SUDO_USER`] (a test fixture, nothing secret).
pub const SUDO_PASSWORD: &str = "fleet-testbed-sudo";

/// The Debian packages the testbed and the tests need.
pub const PACKAGES: &[&str] = &[
    "nix-bin",
    "openssh-server",
    "openssh-client",
    "sudo",
    "iproute2",
    "zstd",
    "procps",
    "psmisc",
    "util-linux",
    "passwd",
    "debootstrap",
];

/// Tool → the package that provides it.
const TOOLS: &[(&str, &str)] = &[
    ("nix-store", "nix-bin"),
    ("nix-build", "nix-bin"),
    ("nix-instantiate", "nix-bin"),
    ("nix-copy-closure", "nix-bin"),
    ("/usr/sbin/sshd", "openssh-server"),
    ("ssh", "openssh-client"),
    ("ssh-keygen", "openssh-client"),
    ("sudo", "sudo"),
    ("ip", "iproute2"),
    ("tc", "iproute2"),
    ("zstd", "zstd"),
    ("pkill", "procps"),
    ("fuser", "psmisc"),
    ("unshare", "util-linux"),
    ("nsenter", "util-linux"),
    ("script", "bsdutils"),
    ("mount", "mount"),
    ("useradd", "passwd"),
    ("chpasswd", "passwd"),
    ("debootstrap", "debootstrap"),
];

/// What [`ensure_prerequisites`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetupReport {
    /// Packages installed with apt-get (empty when everything was there).
    pub installed: Vec<String>,
    /// Whether the sudo user was created now.
    pub created_sudo_user: bool,
}

/// Tools (and their packages) that are not installed.
pub fn missing_tools() -> (Vec<String>, Vec<String>) {
    let mut tools = Vec::new();
    let mut packages: Vec<String> = Vec::new();
    for (tool, package) in TOOLS {
        if !on_path(tool) {
            tools.push((*tool).to_owned());
            if !packages.iter().any(|p| p == package) {
                packages.push((*package).to_owned());
            }
        }
    }
    (tools, packages)
}

/// Makes this machine ready for testbeds, once per process: checks root, installs missing
/// packages with apt-get (apt's output goes to stderr), creates the sudo user and the mount
/// points, and probes that namespaces work. Safe to call from many tests at once.
pub fn ensure_prerequisites() -> Result<SetupReport> {
    static DONE: OnceLock<SetupReport> = OnceLock::new();
    if let Some(done) = DONE.get() {
        return Ok(done.clone());
    }
    // A failure is not remembered: the next call tries again (maybe the user fixed it).
    let report = setup_locked()?;
    Ok(DONE.get_or_init(|| report).clone())
}

fn setup_locked() -> Result<SetupReport> {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if uid != 0 {
        return Err(Error::NotRoot { uid });
    }
    fs::create_dir_all(LOCK_DIR).map_err(|source| Error::Io {
        action: "creating",
        path: LOCK_DIR.into(),
        source,
    })?;
    // One process at a time sets the machine up (apt, useradd).
    let lock_path = Path::new(LOCK_DIR).join("setup.lock");
    let lock = File::create(&lock_path).map_err(|source| Error::Io {
        action: "creating",
        path: lock_path.clone(),
        source,
    })?;
    // SAFETY: flock on a descriptor we own.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };

    let mut report = SetupReport::default();
    let (tools, packages) = missing_tools();
    if !tools.is_empty() {
        apt_install(PACKAGES)?;
        let (still, still_packages) = missing_tools();
        if !still.is_empty() {
            return Err(Error::MissingTools {
                missing: still,
                packages: still_packages,
            });
        }
        report.installed = packages;
    }
    for dir in ["/nix", "/etc/nixos", "/boot"] {
        fs::create_dir_all(dir).map_err(|source| Error::Io {
            action: "creating",
            path: dir.into(),
            source,
        })?;
    }
    if !Path::new("/nix/var/nix/db").exists() {
        run(&mut cmd("nix-store", ["--init"]))?;
    }
    ensure_build_users()?;
    report.created_sudo_user = ensure_sudo_user()?;
    probe_namespaces()?;
    drop(lock);
    Ok(report)
}

fn apt_install(packages: &[&str]) -> Result<()> {
    for args in [
        vec!["update".to_owned()],
        ["install", "-y", "--no-install-recommends"]
            .iter()
            .map(|s| (*s).to_owned())
            .chain(packages.iter().map(|s| (*s).to_owned()))
            .collect(),
    ] {
        let mut c = Command::new("apt-get");
        c.args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::io::stderr()));
        let status = c.status().map_err(|source| Error::Spawn {
            command: describe(&c),
            source,
        })?;
        if !status.success() {
            return Err(Error::Command {
                command: describe(&c),
                status: status.to_string(),
                stderr: "see apt-get's output above".into(),
            });
        }
    }
    Ok(())
}

/// How many `nixbldN` users [`ensure_build_users`] makes (Nix builds as many derivations at once
/// as there are build users).
const BUILD_USERS: u32 = 8;

/// Nix run as root builds as the members of the `nixbld` group (its default
/// `build-users-group`) and refuses to build without it. Debian's `nix-bin` leaves creating
/// them to `nix-setup-systemd`, which a `--no-install-recommends` install lacks, so they are
/// made here the same way: a system group and `nixbld1..8` system users without a login.
fn ensure_build_users() -> Result<()> {
    if !output(&mut cmd("getent", ["group", "nixbld"]))?
        .status
        .success()
    {
        run(&mut cmd("groupadd", ["--system", "nixbld"]))?;
    }
    for i in 1..=BUILD_USERS {
        let user = format!("nixbld{i}");
        if output(&mut cmd("id", ["-u", &user]))?.status.success() {
            continue;
        }
        run(&mut cmd(
            "useradd",
            [
                "--system",
                "--no-create-home",
                "--home-dir",
                "/var/empty",
                "--shell",
                "/usr/sbin/nologin",
                "--gid",
                "nixbld",
                "--groups",
                "nixbld",
                "--comment",
                &format!("Nix build user {i}"),
                &user,
            ],
        ))?;
    }
    Ok(())
}

/// The sudo user's uid, gid and home directory, from `/etc/passwd`.
pub(crate) fn sudo_user_entry() -> Option<(u32, u32, String)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 7 && f[0] == SUDO_USER)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?, f[5].to_owned())))
            .flatten()
    })
}

/// Creates [`SUDO_USER`] with [`SUDO_PASSWORD`] and a sudoers entry that asks for it.
/// Returns whether the user was created now.
fn ensure_sudo_user() -> Result<bool> {
    let exists = output(&mut cmd("id", ["-u", SUDO_USER]))?.status.success();
    if !exists {
        run(&mut cmd(
            "useradd",
            ["--create-home", "--shell", "/bin/sh", SUDO_USER],
        ))?;
    }
    // Always (re)set the password: cheap, and repairs a half-made user.
    let mut c = Command::new("chpasswd");
    c.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().map_err(|source| Error::Spawn {
        command: "chpasswd".into(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = writeln!(stdin, "{SUDO_USER}:{SUDO_PASSWORD}");
    }
    let out = child.wait_with_output().map_err(|source| Error::Spawn {
        command: "chpasswd".into(),
        source,
    })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: "chpasswd".into(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    let sudoers = Path::new("/etc/sudoers.d/fleet-testbed");
    let want = format!("# fleet-testbed: the simulated hosts' sudo user (password required)\n{SUDO_USER} ALL=(ALL) ALL\n");
    if fs::read_to_string(sudoers).ok().as_deref() != Some(want.as_str()) {
        fs::create_dir_all("/etc/sudoers.d").map_err(|source| Error::Io {
            action: "creating",
            path: "/etc/sudoers.d".into(),
            source,
        })?;
        let tmp = sudoers.with_extension("tmp");
        fs::write(&tmp, &want)
            .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o440)))
            .and_then(|()| fs::rename(&tmp, sudoers))
            .map_err(|source| Error::Io {
                action: "writing",
                path: sudoers.into(),
                source,
            })?;
    }
    Ok(!exists)
}

/// Fails with [`Error::NoNamespaces`] when new network and mount namespaces cannot be made.
fn probe_namespaces() -> Result<()> {
    let mut c = cmd(
        "unshare",
        ["--net", "--mount", "--propagation", "private", "true"],
    );
    let out = output(&mut c)?;
    if !out.status.success() {
        return Err(Error::NoNamespaces {
            probe: describe(&c),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}
