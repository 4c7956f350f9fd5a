//! Other Debian userlands (other Nix and OpenSSH versions) for simulated hosts and the deployer.
//!
//! A *root* is a `debootstrap --variant=minbase` of a Debian suite with Nix, OpenSSH, zstd and
//! sudo, built once per machine and cached outside the repository under [`roots_dir`]
//! (`/var/cache/fleet-testbed/roots/<suite>`). A host started with
//! [`crate::HostSpec::userland`] runs its sshd (and so every session, `sudo` and
//! [`crate::Testbed::exec`]) with `chroot <root>`, after its private `/nix`, `/run`,
//! `/etc/nixos`, `/boot`, `/root`, the sudo user's home and `/tmp` were bound into the root in
//! its mount namespace: the root's Nix, sh and zstd work on the host's store.
//! [`nix_wrappers`] makes a directory of `nix*` programs that run the root's Nix against this
//! machine's `/nix`, to put first on a deployer's `PATH`.
//!
//! Building a root: `debootstrap` into `<suite>.building-<pid>`, finish the configuration that
//! fails in a plain debootstrap (`libdbd-sqlite3-perl` needs `libdbi-perl`, installed with
//! `apt-get -f install` in the root, `/proc` and `/dev` mounted in a private mount namespace),
//! `build-users-group =` in the root's `nix.conf`, then rename to `<suite>`: a directory with
//! that name is always complete. `<suite>.lock` (flock) keeps concurrent processes from
//! building twice. The sudo user's entries are copied into the root on every use.

use std::fs::{self, File};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::describe;
use crate::error::{Error, Result};
use crate::prereq::{ensure_prerequisites, SUDO_USER};

/// Which programs a simulated host (or a deployer) runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Userland {
    /// This machine's own programs (Debian 12: Nix 2.8, OpenSSH 9.2).
    #[default]
    Machine,
    /// Debian trixie: Nix 2.26, OpenSSH 10.0.
    Trixie,
    /// Debian sid: Nix 2.34, OpenSSH 10.x.
    Sid,
}

impl Userland {
    /// The userlands that need a root.
    pub const ROOTS: [Userland; 2] = [Userland::Trixie, Userland::Sid];

    /// `machine`, `trixie`, `sid`.
    pub fn name(self) -> &'static str {
        match self {
            Userland::Machine => "machine",
            Userland::Trixie => "trixie",
            Userland::Sid => "sid",
        }
    }

    /// The Debian suite its root is made of (`None` for the machine's own).
    pub fn suite(self) -> Option<&'static str> {
        match self {
            Userland::Machine => None,
            Userland::Trixie => Some("trixie"),
            Userland::Sid => Some("sid"),
        }
    }
}

impl std::fmt::Display for Userland {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What goes into every root (with `debootstrap --include`).
pub const ROOT_PACKAGES: &[&str] = &[
    "nix-bin",
    "openssh-server",
    "zstd",
    "sudo",
    "iproute2",
    "util-linux",
    "procps",
];

/// Bumped when the recipe changes: a root built by another recipe is rebuilt.
const RECIPE: &str = "fleet-testbed-root 1";
/// The stamp inside a finished root.
const STAMP: &str = "etc/fleet-testbed-root";
/// The default Debian mirror (the registry this machine reaches).
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// Where roots are cached: `$FLEET_TESTBED_ROOTS`, else `/var/cache/fleet-testbed/roots`.
pub fn roots_dir() -> PathBuf {
    std::env::var_os("FLEET_TESTBED_ROOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/fleet-testbed/roots"))
}

/// The Debian mirror roots are built from: `$FLEET_TESTBED_DEBIAN_MIRROR`, else
/// [`DEFAULT_MIRROR`].
pub fn mirror() -> String {
    std::env::var("FLEET_TESTBED_DEBIAN_MIRROR").unwrap_or_else(|_| DEFAULT_MIRROR.to_owned())
}

/// A finished root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    pub userland: Userland,
    /// The root directory.
    pub dir: PathBuf,
    /// `nix-store --version` in the root, e.g. `nix-store (Nix) 2.34.8`.
    pub nix_version: String,
    /// How long building it took, when this call built it (`None`: it was cached).
    pub built_in: Option<Duration>,
}

/// The root of `userland`, built now if it is not cached (a minute or two), `None` for
/// [`Userland::Machine`]. Fails with [`Error::RegistryUnreachable`] (and only then) when the
/// root is missing and the Debian mirror cannot be reached.
pub fn ensure_root(userland: Userland) -> Result<Option<Root>> {
    let Some(suite) = userland.suite() else {
        return Ok(None);
    };
    ensure_prerequisites()?;
    let dir = roots_dir();
    fs::create_dir_all(&dir).map_err(|source| Error::Io {
        action: "creating",
        path: dir.clone(),
        source,
    })?;
    let lock_path = dir.join(format!("{suite}.lock"));
    let lock = File::create(&lock_path).map_err(|source| Error::Io {
        action: "creating",
        path: lock_path.clone(),
        source,
    })?;
    // SAFETY: flock on a descriptor we own; released when `lock` is closed.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    let root = dir.join(suite);
    let mut built_in = None;
    if stamp(&root).as_deref() != Some(RECIPE) {
        let started = Instant::now();
        build(userland, suite, &dir, &root)?;
        built_in = Some(started.elapsed());
    }
    sync_users(&root)?;
    let nix_version = fs::read_to_string(root.join("etc/fleet-testbed-nix-version"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    drop(lock);
    Ok(Some(Root {
        userland,
        dir: root,
        nix_version,
        built_in,
    }))
}

/// The root directory of each userland the hosts need.
pub(crate) type Roots = std::collections::BTreeMap<Userland, PathBuf>;

/// Builds or finds the roots `specs` need.
pub(crate) fn roots_for(specs: &[crate::HostSpec]) -> Result<Roots> {
    let mut roots = Roots::new();
    let mut wanted: Vec<Userland> = specs.iter().map(|s| s.userland).collect();
    wanted.sort();
    wanted.dedup();
    for u in wanted {
        if let Some(root) = ensure_root(u)? {
            roots.insert(u, root.dir);
        }
    }
    Ok(roots)
}

fn stamp(root: &Path) -> Option<String> {
    fs::read_to_string(root.join(STAMP))
        .ok()
        .map(|s| s.trim().to_owned())
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.into(),
        source,
    }
}

/// Builds `root` (we hold its lock): removes what an earlier build left, debootstraps into a
/// temporary directory, finishes and configures it, renames it into place.
fn build(userland: Userland, suite: &str, dir: &Path, root: &Path) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(io("reading", dir))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{suite}.building-")) || name == suite {
            // Half-built (its builder died) or built by an older recipe.
            fs::remove_dir_all(e.path()).map_err(io("removing", &e.path()))?;
        }
    }
    let mirror = mirror();
    probe_mirror(userland, &mirror)?;
    let tmp = dir.join(format!("{suite}.building-{}", std::process::id()));
    let log_path = dir.join(format!("{suite}.log"));
    let log = File::create(&log_path).map_err(io("creating", &log_path))?;
    let log_err = log.try_clone().map_err(io("opening", &log_path))?;
    // In a private mount namespace: the /proc and /sys debootstrap mounts in the target die
    // with it, even when it is killed (so removing a half-built root never meets a mount).
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "debootstrap"])
        .arg("--variant=minbase")
        .arg(format!("--include={}", ROOT_PACKAGES.join(",")))
        .arg(suite)
        .arg(&tmp)
        .arg(&mirror)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    // SAFETY: prctl is async-signal-safe. Dies with this process: a killed test leaves no
    // debootstrap writing on (the next build removes the half-built directory).
    unsafe {
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let status = c.status().map_err(|source| Error::Spawn {
        command: describe(&c),
        source,
    })?;
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    if !tmp.join("usr/bin/nix-store").exists() {
        let _ = fs::remove_dir_all(&tmp);
        let tail = tail(&text, 15);
        // Downloads that fail are the registry's; anything else is a real failure.
        if text.contains("Failed getting release file")
            || text.contains("Couldn't download")
            || text.contains("Couldn't get")
        {
            return Err(Error::RegistryUnreachable {
                userland: userland.to_string(),
                mirror,
                reason: tail,
            });
        }
        return Err(Error::RootBuild {
            userland: userland.to_string(),
            step: format!("`{}` ({status})", describe(&c)),
            log: log_path,
            tail,
        });
    }
    // A plain debootstrap of trixie/sid leaves `libdbd-sqlite3-perl` (and so nix-bin)
    // unconfigured: it needs the virtual `perl-dbdabi-94`, which `libdbi-perl` provides.
    // Finish it in a private mount namespace (its /proc and /dev mounts die with it).
    fs::create_dir_all(tmp.join("etc/nix")).map_err(io("creating", &tmp))?;
    for sub in ["nix", "etc/nixos", "boot"] {
        fs::create_dir_all(tmp.join(sub)).map_err(io("creating", &tmp))?;
    }
    fs::write(
        tmp.join("etc/nix/nix.conf"),
        "# fleet-testbed: no nixbld users in this root; root's Nix builds as root.\n\
         build-users-group =\n",
    )
    .map_err(io("writing", &tmp))?;
    let finish = "set -e\n\
         R=$1\n\
         mount -t proc proc \"$R/proc\"\n\
         mount --rbind /dev \"$R/dev\"\n\
         chroot \"$R\" /bin/sh -c 'export DEBIAN_FRONTEND=noninteractive\n\
           apt-get -f install -y --no-install-recommends libdbi-perl\n\
           dpkg --configure -a\n\
           apt-get clean\n\
           test -z \"$(dpkg --audit)\"\n\
           nix-store --version > /etc/fleet-testbed-nix-version\n\
           nix-store --version'\n";
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        finish,
        "sh",
    ])
    .arg(&tmp)
    .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    .stdin(Stdio::null());
    let out = c.output().map_err(|source| Error::Spawn {
        command: describe(&c),
        source,
    })?;
    let mut text = text;
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let _ = fs::write(&log_path, &text);
    if !out.status.success() {
        let _ = fs::remove_dir_all(&tmp);
        let tail = tail(&text, 15);
        if text.contains("Temporary failure resolving")
            || text.contains("Failed to fetch")
            || text.contains("Could not connect")
        {
            return Err(Error::RegistryUnreachable {
                userland: userland.to_string(),
                mirror,
                reason: tail,
            });
        }
        return Err(Error::RootBuild {
            userland: userland.to_string(),
            step: "finishing the configuration (apt-get -f install libdbi-perl)".into(),
            log: log_path,
            tail,
        });
    }
    fs::write(tmp.join(STAMP), format!("{RECIPE}\n")).map_err(io("writing", &tmp))?;
    fs::rename(&tmp, root).map_err(io("renaming into place", root))?;
    Ok(())
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Fails with [`Error::RegistryUnreachable`] when no address of the mirror's host accepts a
/// TCP connection within 10 s.
fn probe_mirror(userland: Userland, mirror: &str) -> Result<()> {
    let rest = mirror
        .strip_prefix("http://")
        .map(|r| (r, 80))
        .or_else(|| mirror.strip_prefix("https://").map(|r| (r, 443)));
    let Some((rest, default_port)) = rest else {
        return Err(Error::RootBuild {
            userland: userland.to_string(),
            step: format!("reading the mirror URL `{mirror}`"),
            log: PathBuf::new(),
            tail: "FLEET_TESTBED_DEBIAN_MIRROR must start with http:// or https://".into(),
        });
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse().unwrap_or(default_port)),
        _ => (authority, default_port),
    };
    let unreachable = |reason: String| Error::RegistryUnreachable {
        userland: userland.to_string(),
        mirror: mirror.to_owned(),
        reason,
    };
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| unreachable(format!("resolving {host}: {e}")))?
        .collect();
    let mut last = format!("{host} has no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, Duration::from_secs(10)) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("connecting to {a}: {e}"),
        }
    }
    Err(unreachable(last))
}

/// Copies the sudo user's `passwd`, `shadow` and `group` entries and its sudoers file into the
/// root (same uid, gid and password as on this machine), makes its home's mount point, and
/// copies `/etc/hosts` and `/etc/hostname` (sudo resolves the host's name).
fn sync_users(root: &Path) -> Result<()> {
    for file in ["/etc/hosts", "/etc/hostname"] {
        let Ok(text) = fs::read_to_string(file) else {
            continue;
        };
        let path = root.join(file.trim_start_matches('/'));
        if fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            fs::write(&path, &text).map_err(io("writing", &path))?;
        }
    }
    for file in ["/etc/passwd", "/etc/shadow", "/etc/group"] {
        let machine = fs::read_to_string(file).map_err(io("reading", Path::new(file)))?;
        let Some(line) = machine
            .lines()
            .find(|l| l.split(':').next() == Some(SUDO_USER))
        else {
            continue;
        };
        let path = root.join(file.trim_start_matches('/'));
        let text = fs::read_to_string(&path).map_err(io("reading", &path))?;
        let mut lines: Vec<&str> = text
            .lines()
            .filter(|l| l.split(':').next() != Some(SUDO_USER))
            .collect();
        lines.push(line);
        let want = lines.join("\n") + "\n";
        if want != text {
            let mode = fs::metadata(&path)
                .map(|m| m.permissions().mode())
                .unwrap_or(0o644);
            let tmp = path.with_extension("fleet-testbed-tmp");
            fs::write(&tmp, &want)
                .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)))
                .and_then(|()| fs::rename(&tmp, &path))
                .map_err(io("writing", &path))?;
        }
    }
    let sudoers = Path::new("/etc/sudoers.d/fleet-testbed");
    let want = fs::read_to_string(sudoers).map_err(io("reading", sudoers))?;
    let inside = root.join("etc/sudoers.d/fleet-testbed");
    if fs::read_to_string(&inside).ok().as_deref() != Some(want.as_str()) {
        let tmp = inside.with_extension("tmp");
        fs::write(&tmp, &want)
            .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o440)))
            .and_then(|()| fs::rename(&tmp, &inside))
            .map_err(io("writing", &inside))?;
    }
    if let Some((_, _, home)) = crate::prereq::sudo_user_entry() {
        let p = root.join(home.trim_start_matches('/'));
        fs::create_dir_all(&p).map_err(io("creating", &p))?;
    }
    Ok(())
}

/// Shell lines (run in a host's mount namespace after its own mounts) that bind the host's
/// `/nix`, `/run`, `/etc/nixos`, `/boot`, `/root`, the sudo user's `home` and the machine's
/// `/tmp` into `root` and mount `/proc` and `/dev` there.
pub(crate) fn host_mounts(root: &Path, home: &str) -> String {
    let r = root.display().to_string();
    let mut s = String::new();
    for dir in ["/nix", "/run", "/etc/nixos", "/boot", "/root", home, "/tmp"] {
        s.push_str(&format!(
            "mount --bind {} {}\n",
            sq(dir),
            sq(&format!("{r}{dir}"))
        ));
    }
    s.push_str(&format!(
        "mount -t proc proc {}\nmount --rbind /dev {}\n",
        sq(&format!("{r}/proc")),
        sq(&format!("{r}/dev"))
    ));
    s
}

/// `s` quoted for sh: `'...'`, with each `'` written as `'\''`.
fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Writes into `dir` one wrapper per `nix*` program of `root` (`nix`, `nix-store`,
/// `nix-instantiate`, `nix-build`, ...): each runs the root's program in the root (`chroot`, in
/// a private mount namespace where this machine's `/nix`, `/tmp` and the directories `share`
/// are bound in at the same paths, `/proc` and `/dev` mounted), with the caller's working
/// directory and environment (`PATH` becomes the root's). Put `dir` first on a deployer's
/// `PATH` to make the root's Nix its local Nix, on this machine's store. With
/// `FLEET_TESTBED_NIX_LOG=FILE` in the environment, each call appends its command line to FILE.
pub fn nix_wrappers(root: &Root, dir: &Path, share: &[PathBuf]) -> Result<()> {
    fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let r = sq(&root.dir.display().to_string());
    let mut binds = String::new();
    for d in [Path::new("/nix"), Path::new("/tmp")]
        .into_iter()
        .chain(share.iter().map(PathBuf::as_path))
    {
        let inside = root.dir.join(d.strip_prefix("/").unwrap_or(d));
        fs::create_dir_all(&inside).map_err(io("creating", &inside))?;
        let d = sq(&d.display().to_string());
        binds.push_str(&format!("mount --bind {d} \"$R\"{d}\n"));
    }
    let enter = dir.join("fleet-testbed-enter");
    let script = format!(
        "#!/bin/sh\n\
         # fleet-testbed: run PROGRAM ARGS... of the {u} userland ({v}) on this machine's /nix.\n\
         if [ -z \"$FLEET_TESTBED_ENTERED\" ]; then\n\
         \x20 if [ -n \"$FLEET_TESTBED_NIX_LOG\" ]; then echo \"$*\" >> \"$FLEET_TESTBED_NIX_LOG\"; fi\n\
         \x20 FLEET_TESTBED_ENTERED=1 exec unshare --mount --propagation private \"$0\" \"$@\"\n\
         fi\n\
         unset FLEET_TESTBED_ENTERED\n\
         set -e\n\
         R={r}\n\
         {binds}\
         mount -t proc proc \"$R/proc\"\n\
         mount --rbind /dev \"$R/dev\"\n\
         cwd=$(pwd)\n\
         exec chroot \"$R\" /bin/sh -c 'cd \"$0\" 2>/dev/null || {{ echo \"fleet-testbed: $0 is not visible in the {u} userland\" >&2; exit 127; }}\n\
         PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin exec \"$@\"' \"$cwd\" \"$@\"\n",
        u = root.userland,
        v = root.nix_version,
    );
    write_exec(&enter, &script)?;
    let bin = root.dir.join("usr/bin");
    let entries = fs::read_dir(&bin).map_err(io("reading", &bin))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "nix" || name.starts_with("nix-") {
            write_exec(
                &dir.join(&name),
                &format!(
                    "#!/bin/sh\nexec {} /usr/bin/{name} \"$@\"\n",
                    sq(&enter.display().to_string())
                ),
            )?;
        }
    }
    Ok(())
}

fn write_exec(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o755)))
        .map_err(io("writing", path))
}

/// Builds (or finds) every root at once, for `cargo xtask setup`: one result per root
/// userland.
pub fn ensure_roots() -> Vec<(Userland, Result<Option<Root>>)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = Userland::ROOTS
            .into_iter()
            .map(|u| (u, s.spawn(move || ensure_root(u))))
            .collect();
        handles
            .into_iter()
            .map(|(u, h)| {
                let r = h.join().unwrap_or_else(|_| {
                    Err(Error::RootBuild {
                        userland: u.to_string(),
                        step: "a panicking thread".into(),
                        log: PathBuf::new(),
                        tail: String::new(),
                    })
                });
                (u, r)
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_mounts_bind_the_host_into_the_root() {
        let s = host_mounts(Path::new("/r"), "/home/fltbsudo");
        assert!(s.contains("mount --bind '/nix' '/r/nix'\n"));
        assert!(s.contains("mount --bind '/home/fltbsudo' '/r/home/fltbsudo'\n"));
        assert!(s.contains("mount -t proc proc '/r/proc'"));
        assert_eq!(sq("a'b"), "'a'\\''b'");
    }

    #[test]
    fn names_and_suites() {
        assert_eq!(Userland::default(), Userland::Machine);
        assert_eq!(Userland::Machine.suite(), None);
        assert_eq!(Userland::Sid.suite(), Some("sid"));
        assert_eq!(Userland::Trixie.to_string(), "trixie");
    }

    #[test]
    fn unreachable_mirror_is_reported_as_such() {
        let e = probe_mirror(Userland::Sid, "http://127.0.0.1:9/debian").unwrap_err();
        assert!(matches!(e, Error::RegistryUnreachable { .. }), "{e}");
        let e = probe_mirror(Userland::Sid, "ftp://x").unwrap_err();
        assert!(matches!(e, Error::RootBuild { .. }), "{e}");
    }
}
