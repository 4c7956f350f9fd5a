//! The adaptive transport of the compressed copy: how fast each host's link is, and which zstd
//! level follows from it.
//!
//! Before a big compressed copy (at least [`PROBE_MIN_NAR`] of NAR for the host), fleet sends
//! [`PROBE_BYTES`] of incompressible bytes to `cat > /dev/null` on each host, all hosts at once,
//! and times them until the host's exit status is back: the link's own throughput (sshd and a
//! pipe on the host, neither `zstd -dc` nor `nix-store`). [`level_for`] turns it into a level:
//! on a fast link the CPUs are the bottleneck and zstd level 1 costs the least; on a slow link
//! every byte saved is time saved, and a stronger level still compresses far faster than the
//! link sends. The compressed copy compresses each segment **once per distinct level** among
//! the hosts that lack it (hosts grouped by link class), so one slow host does not make the
//! fast ones wait for a strong level, nor the fast ones cost the slow one bytes.
//!
//! Measured on this machine's shared libraries (`zstd -b`, 100 MB, busy machine): level 1
//! 2.95× at 139 MB/s, level 3 3.47× at 139 MB/s, level 6 3.78× at 49 MB/s; decompression
//! 400–575 MB/s for all.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::sudo::Privilege;
use crate::Connection;

/// What each probe sends.
pub const PROBE_BYTES: usize = 1 << 20;
/// Hosts that lack less NAR than this are not probed (the probe would cost more than a
/// better level saves): they get the default level.
pub const PROBE_MIN_NAR: u64 = 64 << 20;

/// Links at least this fast (bytes/s, 200 Mbit/s: a gigabit LAN, not a 100 Mbit/s one) are
/// CPU-bound: zstd level 1.
pub const FAST_LINK: u64 = 25_000_000;
/// Links slower than this (bytes/s, 40 Mbit/s) are what the copy waits for: zstd level 6.
pub const SLOW_LINK: u64 = 5_000_000;

/// How a compressed copy picks each host's zstd level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelChoice {
    /// This level for every host, nothing measured.
    Fixed(i32),
    /// Measure the link of each host that lacks at least `probe_from` bytes of NAR, and pick
    /// its level ([`level_for`]); `default` where nothing was measured.
    Adaptive { default: i32, probe_from: u64 },
}

impl LevelChoice {
    /// Adaptive, probing hosts that lack at least [`PROBE_MIN_NAR`].
    pub fn adaptive(default: i32) -> Self {
        LevelChoice::Adaptive {
            default,
            probe_from: PROBE_MIN_NAR,
        }
    }
}

impl From<i32> for LevelChoice {
    fn from(level: i32) -> Self {
        LevelChoice::Fixed(level)
    }
}

/// The zstd level for a link measured at `bytes_per_s` (`None`: not measured: `default`).
pub fn level_for(bytes_per_s: Option<u64>, default: i32) -> i32 {
    match bytes_per_s {
        None => default,
        Some(r) if r >= FAST_LINK => 1,
        Some(r) if r >= SLOW_LINK => 3,
        Some(_) => 6,
    }
}

/// What one host's compressed copy uses, as its `transport` event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    pub zstd_level: i32,
    /// The SSH cipher of the host's connection.
    pub cipher: String,
    /// The probe's throughput, bytes/s (`None`: not probed).
    pub measured_bytes_per_s: Option<u64>,
}

/// Bytes/s from `bytes` sent in `took`.
pub fn rate(bytes: usize, took: Duration) -> u64 {
    let secs = took.as_secs_f64().max(1e-6);
    (bytes as f64 / secs) as u64
}

/// Sends [`PROBE_BYTES`] to `cat > /dev/null` on the host (as the login user) and returns the
/// throughput, bytes/s: the time from the first byte written to the exit status, less the same
/// for an empty stdin (the round trip and `cat` starting and ending, which would otherwise make
/// a fast link look slow). `None` if a probe failed: the copy then takes the default level and
/// reports its own errors.
pub async fn probe(conn: &Connection) -> Option<u64> {
    let fixed = send(conn, &[]).await?;
    let took = send(conn, &noise(PROBE_BYTES)).await?;
    Some(rate(PROBE_BYTES, net_of(took, fixed)))
}

/// `took` less the fixed cost `fixed`, but never under a tenth of `took` (a noisy baseline).
pub fn net_of(took: Duration, fixed: Duration) -> Duration {
    took.saturating_sub(fixed).max(took / 10)
}

/// The time from the first write of `data` into `cat > /dev/null` to its exit status.
async fn send(conn: &Connection, data: &[u8]) -> Option<Duration> {
    let proc = conn.spawn("cat > /dev/null", &Privilege::None).await.ok()?;
    let (stdout, mut stdin, exit) = proc.into_parts();
    drop(stdout);
    let start = Instant::now();
    let wrote = stdin.write_all(data).await;
    let _ = stdin.shutdown().await;
    drop(stdin);
    let info = exit.finish().await.ok()?;
    let took = start.elapsed();
    (wrote.is_ok() && info.success()).then_some(took)
}

/// Incompressible bytes (xorshift), so no compression on the way changes what is measured.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_follows_the_link() {
        // Not measured: the default.
        assert_eq!(level_for(None, 3), 3);
        assert_eq!(level_for(None, 9), 9);
        // A 10 Gbit/s LAN, and a veth on this machine: CPU-bound, level 1.
        assert_eq!(level_for(Some(1_250_000_000), 3), 1);
        assert_eq!(level_for(Some(FAST_LINK), 3), 1);
        assert_eq!(level_for(Some(30_000_000), 3), 1);
        // 100 Mbit/s: level 3.
        assert_eq!(level_for(Some(12_500_000), 3), 3);
        assert_eq!(level_for(Some(SLOW_LINK), 3), 3);
        // 20 Mbit/s, and a DSL uplink: level 6.
        assert_eq!(level_for(Some(2_500_000), 3), 6);
        assert_eq!(level_for(Some(SLOW_LINK - 1), 3), 6);
        assert_eq!(level_for(Some(0), 3), 6);
    }

    #[test]
    fn rate_and_noise() {
        assert_eq!(rate(1 << 20, Duration::from_millis(500)), 2_097_152);
        assert!(rate(1, Duration::ZERO) > 0);
        let ms = Duration::from_millis;
        assert_eq!(net_of(ms(30), ms(10)), ms(20));
        assert_eq!(net_of(ms(30), ms(40)), ms(3));
        let n = noise(PROBE_BYTES);
        assert_eq!(n.len(), PROBE_BYTES);
        let z = zstd::bulk::compress(&n, 3).unwrap();
        assert!(z.len() > PROBE_BYTES * 99 / 100, "{}", z.len());
    }
}
