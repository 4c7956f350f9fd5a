//! Measuring processes: wall time, the CPU time of a process and the children it waited for
//! (`wait4`'s rusage, like `/usr/bin/time`), the whole machine's busy CPU time (`/proc/stat`),
//! and bytes on a host's link (the bridge-side veth's `tx_bytes`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::Result;

/// A spawned process whose CPU time we want: reaped with `wait4`, never with `Child::wait`.
pub struct Proc {
    pid: i32,
    /// Kept so its pipes stay where the caller put them; never waited through std.
    _child: Child,
    what: String,
    log: PathBuf,
}

/// Spawns `c` with stderr (and stdout, unless the caller set it) appended to `log`.
pub fn spawn(c: &mut Command, what: &str, log: &Path, stdout_set: bool) -> Result<Proc> {
    let file = File::options().create(true).append(true).open(log)?;
    if !stdout_set {
        c.stdout(Stdio::from(file.try_clone()?));
    }
    c.stderr(Stdio::from(file));
    let child = c
        .spawn()
        .map_err(|e| format!("spawning {what} ({:?}): {e}", c.get_program()))?;
    Ok(Proc {
        pid: child.id() as i32,
        _child: child,
        what: what.to_owned(),
        log: log.to_owned(),
    })
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self._child.stdout.take()
    }

    /// Waits for the process; returns the CPU time (user + system) of it and of every
    /// descendant it waited for. A non-zero exit is an error that quotes the log's end.
    pub fn reap(self) -> Result<Duration> {
        let (status, cpu) = wait4(self.pid)?;
        let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        if !ok {
            return Err(format!(
                "{} failed (wait status {status:#x}); end of {}:\n{}",
                self.what,
                self.log.display(),
                tail(&self.log, 3000)
            )
            .into());
        }
        Ok(cpu)
    }
}

fn wait4(pid: i32) -> Result<(i32, Duration)> {
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child `pid`.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: see above.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4({pid}): {e}").into());
        }
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok((status, tv(ru.ru_utime) + tv(ru.ru_stime)))
}

/// The last `max` bytes of a file, for error messages.
pub fn tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut s = Vec::new();
    let _ = f.read_to_end(&mut s);
    String::from_utf8_lossy(&s).into_owned()
}

/// Busy CPU time of the whole machine since boot (all CPUs: user, nice, system, irq, softirq,
/// steal), from `/proc/stat`.
pub fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return Duration::ZERO;
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(busy * 1_000_000_000 / hz)
}

/// Bytes sent from the bridge into host `index` of testbed instance `instance` (the host's
/// inbound traffic: everything the deployer sent it, framing included).
pub fn veth_tx(instance: u32, index: usize) -> u64 {
    std::fs::read_to_string(format!(
        "/sys/class/net/flt{instance}h{index}/statistics/tx_bytes"
    ))
    .ok()
    .and_then(|s| s.trim().parse().ok())
    .unwrap_or(0)
}

/// `/proc/loadavg`'s first three numbers.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Other processes that load the CPU and would make timings noisy: cargo, rustc, test
/// binaries, other benches.
pub fn busy_processes() -> Vec<String> {
    // This process and its ancestors (`cargo xtask bench` runs under cargo) do not count.
    let mut mine = vec![std::process::id()];
    while let Some(&p) = mine.last() {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|x| x.parse::<u32>().ok())
            .unwrap_or(0);
        if ppid <= 1 || mine.contains(&ppid) {
            break;
        }
        mine.push(ppid);
    }
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if mine.contains(&pid) {
            continue;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let comm = comm.trim();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let is_test = cmdline.contains("/target/debug/deps/") || cmdline.contains("cargo test");
        if comm == "rustc" || comm == "cargo" || is_test {
            found.push(format!("{pid} {comm}"));
        }
    }
    found
}
