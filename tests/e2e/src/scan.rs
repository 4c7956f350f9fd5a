//! The scanner of processes' argv and environment (the secrets and relay tests): every process
//! of a run (fleet's descendants, anything in a host's network namespace) whose `cmdline` or
//! `environ` holds one of the needles.

use std::collections::BTreeSet;

/// The network namespace (inode) of a process.
pub fn netns_of(pid: u32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    let s = link.to_string_lossy().into_owned();
    s.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

pub fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    for _ in 0..64 {
        if pid == ancestor {
            return true;
        }
        let Some(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok() else {
            return false;
        };
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        match parent {
            Some(p) if p > 1 => pid = p,
            _ => return false,
        }
    }
    false
}

/// Processes of the run (fleet's descendants, anything in a host's network namespace) whose
/// argv or environment holds one of `needles`: (needle index, description).
pub fn scan_proc(
    needles: &[Vec<u8>],
    fleet_pid: u32,
    netns: &BTreeSet<u64>,
) -> Vec<(usize, String)> {
    let mut hits = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if !(descends_from(pid, fleet_pid) || netns_of(pid).is_some_and(|n| netns.contains(&n))) {
            continue;
        }
        for file in ["cmdline", "environ"] {
            let Ok(bytes) = std::fs::read(format!("/proc/{pid}/{file}")) else {
                continue;
            };
            for (i, n) in needles.iter().enumerate() {
                if bytes.windows(n.len()).any(|w| w == n.as_slice()) {
                    hits.push((i, format!("pid {pid} {file}")));
                }
            }
        }
    }
    hits
}

/// Runs `wait` while a thread scans (as [`scan_proc`]) every `every`, until `wait` returns:
/// its result, how many scans ran, and every hit.
pub fn scanning<R>(
    needles: Vec<Vec<u8>>,
    fleet_pid: u32,
    netns: BTreeSet<u64>,
    every: std::time::Duration,
    wait: impl FnOnce() -> R,
) -> (R, usize, Vec<(usize, String)>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    let scanner = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut scans, mut hits) = (0, vec![]);
            while !stop.load(Ordering::SeqCst) {
                hits.extend(scan_proc(&needles, fleet_pid, &netns));
                scans += 1;
                std::thread::sleep(every);
            }
            (scans, hits)
        })
    };
    let r = wait();
    stop.store(true, Ordering::SeqCst);
    let (scans, hits) = scanner.join().expect("the scanner thread panicked");
    (r, scans, hits)
}
