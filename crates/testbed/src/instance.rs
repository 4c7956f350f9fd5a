//! Instance numbers: a machine-wide `flock` per number, and removal of what dead instances left.
//!
//! Instance `n` owns `/run/fleet-testbed/<n>.lock` (held with `flock` for the testbed's lifetime),
//! the bridge `fltbr<n>`, veths `flt<n>h<i>`, network namespaces `flt<n>-<host>`, the subnet
//! `172.31.<n>.0/24` and the state directory `/tmp/fleet-testbed-<n>`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cmd::{cmd, output};
use crate::error::{Error, Result};

/// Where the instance locks live.
pub const LOCK_DIR: &str = "/run/fleet-testbed";
/// Instance numbers are `0..MAX_INSTANCES`.
pub const MAX_INSTANCES: u32 = 200;

/// The state directory of instance `n`.
pub fn state_dir(n: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/fleet-testbed-{n}"))
}

/// The bridge of instance `n`.
pub fn bridge_name(n: u32) -> String {
    format!("fltbr{n}")
}

/// The prefix of the network namespaces of instance `n`.
pub fn netns_prefix(n: u32) -> String {
    format!("flt{n}-")
}

fn lock_path(n: u32) -> PathBuf {
    Path::new(LOCK_DIR).join(format!("{n}.lock"))
}

/// A held instance number; dropping it releases the lock.
#[derive(Debug)]
pub struct InstanceLock {
    n: u32,
    file: File,
}

impl InstanceLock {
    /// The instance number.
    pub fn number(&self) -> u32 {
        self.n
    }

    /// Removes the lock file, then releases the lock (in that order, so nobody can lock a file
    /// that is about to disappear and believe they own it: [`try_lock`] re-checks the inode).
    pub fn release(self) {
        let _ = fs::remove_file(lock_path(self.n));
        drop(self.file);
    }
}

/// Tries to take instance `n`. `Ok(None)` when another live process holds it.
pub fn try_lock(n: u32) -> Result<Option<InstanceLock>> {
    fs::create_dir_all(LOCK_DIR).map_err(|source| Error::Io {
        action: "creating",
        path: LOCK_DIR.into(),
        source,
    })?;
    let path = lock_path(n);
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| Error::Io {
                action: "opening",
                path: path.clone(),
                source,
            })?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Ok(None);
        }
        let same = match (fs::metadata(&path), file.metadata()) {
            (Ok(on_disk), Ok(ours)) => on_disk.ino() == ours.ino() && on_disk.dev() == ours.dev(),
            _ => false,
        };
        if !same {
            continue; // unlinked by its previous owner between our open and our flock
        }
        let mut file = file;
        let _ = file.set_len(0);
        let _ = write!(file, "{}", std::process::id());
        return Ok(Some(InstanceLock { n, file }));
    }
}

/// Takes the first free instance number, starting at a per-process offset, after removing
/// anything a dead previous owner of that number left behind.
pub fn acquire() -> Result<InstanceLock> {
    let start = std::process::id() % MAX_INSTANCES;
    for i in 0..MAX_INSTANCES {
        let n = (start + i) % MAX_INSTANCES;
        if let Some(lock) = try_lock(n)? {
            remove_leftovers(n)?;
            return Ok(lock);
        }
    }
    Err(Error::NoFreeInstance { max: MAX_INSTANCES })
}

/// The pid written into a lock file (the owner, if the lock is held).
pub fn owner_pid(n: u32) -> Option<u32> {
    let mut s = String::new();
    File::open(lock_path(n)).ok()?.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

/// One instance as `fleet-testbed list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    pub number: u32,
    /// `true` when a live process holds the lock.
    pub alive: bool,
    pub owner_pid: Option<u32>,
    /// Network namespaces of this instance that exist now.
    pub namespaces: Vec<String>,
}

/// Every instance number that has a lock file, a namespace, a bridge or a state directory.
pub fn known_instances() -> Vec<u32> {
    let mut ns: Vec<u32> = Vec::new();
    if let Ok(dir) = fs::read_dir(LOCK_DIR) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = name.strip_suffix(".lock").and_then(|s| s.parse().ok()) {
                ns.push(n);
            }
        }
    }
    for name in netns_list() {
        if let Some(n) = name
            .strip_prefix("flt")
            .and_then(|r| r.split('-').next())
            .and_then(|s| s.parse().ok())
        {
            ns.push(n);
        }
    }
    for name in link_names() {
        if let Some(n) = name.strip_prefix("fltbr").and_then(|s| s.parse().ok()) {
            ns.push(n);
        }
    }
    if let Ok(dir) = fs::read_dir("/tmp") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = name
                .strip_prefix("fleet-testbed-")
                .and_then(|s| s.parse().ok())
            {
                ns.push(n);
            }
        }
    }
    ns.retain(|n| *n < MAX_INSTANCES);
    ns.sort_unstable();
    ns.dedup();
    ns
}

/// What is known about every instance on this machine.
pub fn list() -> Result<Vec<InstanceInfo>> {
    let all_ns = netns_list();
    let mut out = Vec::new();
    for n in known_instances() {
        let alive = match try_lock(n)? {
            Some(lock) => {
                drop(lock); // keep the file: a dead instance's lock file marks its leftovers
                false
            }
            None => true,
        };
        let prefix = netns_prefix(n);
        out.push(InstanceInfo {
            number: n,
            alive,
            owner_pid: if alive { owner_pid(n) } else { None },
            namespaces: all_ns
                .iter()
                .filter(|s| s.starts_with(&prefix))
                .cloned()
                .collect(),
        });
    }
    Ok(out)
}

/// Removes the leftovers of every instance whose owner is dead. Returns the numbers cleaned.
pub fn cleanup_dead() -> Result<Vec<u32>> {
    let mut cleaned = Vec::new();
    for n in known_instances() {
        if let Some(lock) = try_lock(n)? {
            remove_leftovers(n)?;
            lock.release();
            cleaned.push(n);
        }
    }
    Ok(cleaned)
}

/// Names of all network namespaces (`ip netns list`, first word of each line).
pub(crate) fn netns_list() -> Vec<String> {
    match output(&mut cmd("ip", ["netns", "list"])) {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Names of all links in the current network namespace.
pub(crate) fn link_names() -> Vec<String> {
    match output(&mut cmd("ip", ["-o", "link", "show"])) {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Pids of the processes in network namespace `name`.
pub(crate) fn netns_pids(name: &str) -> Vec<i32> {
    match output(&mut cmd("ip", ["netns", "pids", name])) {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Kills every process in network namespace `name` and waits (up to 5 s) until none is left.
pub(crate) fn kill_netns_processes(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = netns_pids(name);
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids {
            // SAFETY: plain kill(2) on a pid that lives in our own namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Everything of instance `n` that exists: namespaces, links, mounts and the state directory.
pub fn leftovers(n: u32) -> Vec<String> {
    let mut found = Vec::new();
    let prefix = netns_prefix(n);
    for ns in netns_list() {
        if ns.starts_with(&prefix) {
            found.push(format!("network namespace {ns}"));
        }
    }
    let veth = format!("flt{n}h");
    let bridge = bridge_name(n);
    for link in link_names() {
        if link == bridge || link.starts_with(&veth) {
            found.push(format!("link {link}"));
        }
    }
    let dir = state_dir(n);
    let dir_s = dir.to_string_lossy().into_owned();
    if let Ok(mi) = fs::read_to_string("/proc/self/mountinfo") {
        for line in mi.lines() {
            if line.contains(&dir_s) {
                found.push(format!("mount {line}"));
            }
        }
    }
    if dir.exists() {
        found.push(format!("directory {}", dir.display()));
    }
    found
}

/// Removes everything of instance `n`. Call only while holding its lock.
pub(crate) fn remove_leftovers(n: u32) -> Result<()> {
    let prefix = netns_prefix(n);
    for ns in netns_list() {
        if ns.starts_with(&prefix) {
            kill_netns_processes(&ns);
            let _ = output(&mut cmd("ip", ["netns", "del", &ns]));
        }
    }
    let veth = format!("flt{n}h");
    let bridge = bridge_name(n);
    for link in link_names() {
        if link.starts_with(&veth) || link == bridge {
            let _ = output(&mut cmd("ip", ["link", "del", &link]));
        }
    }
    let dir = state_dir(n);
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|source| Error::Io {
            action: "removing",
            path: dir.clone(),
            source,
        })?;
    }
    Ok(())
}
