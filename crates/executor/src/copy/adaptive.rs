//! The adaptive transport: how fast each host's link is, and how the copy uses it.
//!
//! Before a big copy to a host with `zstd` (at least [`PROBE_MIN_NAR`] of NAR), fleet sends
//! [`PROBE_BYTES`] of incompressible bytes to `cat > /dev/null` on each such host, all at once,
//! and times them until the host's exit status is back, less the time of an empty send: the
//! link's own throughput (sshd and a pipe on the host, neither `zstd -dc` nor `nix-store`).
//! [`link_use`] turns it into a transport:
//! - a **fast** link ([`FAST_LINK`] and up): the CPUs are the bottleneck, not the link, and
//!   the cheapest copy for both ends is the **uncompressed serve stream** (no compression on
//!   the deployer, no `zstd -dc` on the host, and `nix-store --serve`'s import is cheaper than
//!   `--import`'s); with AES-GCM (`ssh/cipher.rs`) the extra bytes cost little to encrypt;
//! - a **very slow** link (below [`SLOW_LINK`]): every byte saved is time saved, zstd
//!   **level 6** (and it still compresses far faster than the link sends);
//! - between, or not measured: level 3.
//!
//! Hosts probed together are classed together ([`link_uses`]): one within 1/[`SAME_CLASS`] of
//! the upper quartile of their rates counts as fast when that rate is fast.
//!
//! The compressed copy compresses each segment **once per distinct level** among the hosts
//! that lack it (hosts grouped by link class), so one slow host does not make the others wait
//! for a strong level, nor the others cost the slow one bytes.
//!
//! Measured here (docs/performance.md): 10 hosts, fresh, unlimited links, the serve stream
//! took 6.77 s against 9.73 s compressed (zstd 1 and 3 mixed) and 8.28 s for parallel
//! `nix-copy-closure`. zstd on this machine's shared libraries (`zstd -b`, 100 MB, busy
//! machine): level 1 2.95× at 139 MB/s, level 3 3.47× at 139 MB/s (no faster at level 1, so it
//! is never picked), level 6 3.78× at 49 MB/s; decompression 400–575 MB/s for all.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::sudo::Privilege;
use crate::Connection;

/// What each probe sends first.
pub const PROBE_BYTES: usize = 1 << 20;
/// What a probe of a link that may be fast sends next.
pub const PROBE_MORE_BYTES: usize = 4 << 20;
/// Links measured at least this fast (bytes/s, 40 Mbit/s) on the first send get the second:
/// a 20 Mbit/s link would spend 1.7 s on it.
pub const PROBE_MORE_FROM: u64 = 5_000_000;
/// Hosts that lack less NAR than this are not probed (the probe would cost more than a
/// better level saves): they get the default level.
pub const PROBE_MIN_NAR: u64 = 64 << 20;

/// Links at least this fast (bytes/s, 200 Mbit/s: a gigabit LAN, not a 100 Mbit/s one) are
/// CPU-bound: the uncompressed serve stream.
pub const FAST_LINK: u64 = 25_000_000;
/// Links slower than this (bytes/s, 8 Mbit/s) are what the copy waits for: zstd level 6
/// (8 % fewer bytes than level 3 at a third of its speed: only where the link is far slower
/// than that).
pub const SLOW_LINK: u64 = 1_000_000;

/// A host measured at least 1/`SAME_CLASS` of the fleet's fast rate is in its class
/// ([`link_uses`]): hosts probed at once on a busy machine measure anywhere from 5 to 95 MB/s on
/// the same kind of link (measured here), and a mix of routes costs more than either.
pub const SAME_CLASS: u64 = 16;

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

impl LevelChoice {
    /// The level of a copy that measures no link (a relay's segments, its fallback).
    pub fn unmeasured(self) -> i32 {
        match self {
            LevelChoice::Fixed(level) | LevelChoice::Adaptive { default: level, .. } => level,
        }
    }
}

impl From<i32> for LevelChoice {
    fn from(level: i32) -> Self {
        LevelChoice::Fixed(level)
    }
}

/// How to use a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkUse {
    /// The serve stream, uncompressed.
    Uncompressed,
    /// The compressed stream at this zstd level.
    Zstd(i32),
}

/// How to use a link measured at `bytes_per_s` (`None`: not measured: `default`'s level).
pub fn link_use(bytes_per_s: Option<u64>, default: i32) -> LinkUse {
    match bytes_per_s {
        Some(r) if r >= FAST_LINK => LinkUse::Uncompressed,
        m => LinkUse::Zstd(level_for(m, default)),
    }
}

/// [`link_use`] for hosts probed together: a host within 1/[`SAME_CLASS`] of the fleet's fast
/// rate counts as fast when that rate is [`FAST_LINK`] or more, if it measured at least
/// [`PROBE_MORE_FROM`] itself. The fleet's fast rate is the upper quartile of what was
/// measured, not the fastest host: one host on the deployer's own switch (or a probe that
/// happened to get both CPUs) would otherwise push hosts of the same LAN out of the class. The
/// floor keeps a 20 Mbit/s host compressed however fast its neighbours are.
pub fn link_uses(measured: &[Option<u64>], default: i32) -> Vec<LinkUse> {
    let reference = upper_quartile(measured.iter().flatten().copied().collect());
    measured
        .iter()
        .map(|&m| match m {
            Some(r)
                if reference >= FAST_LINK
                    && r >= PROBE_MORE_FROM
                    && r.saturating_mul(SAME_CLASS) >= reference =>
            {
                LinkUse::Uncompressed
            }
            m => link_use(m, default),
        })
        .collect()
}

/// The rate three quarters of the way up `rates` (nearest rank; 0 when empty).
fn upper_quartile(mut rates: Vec<u64>) -> u64 {
    rates.sort_unstable();
    match rates.len() {
        0 => 0,
        n => rates[(3 * n).div_ceil(4) - 1],
    }
}

/// The zstd level for a link measured at `bytes_per_s` that takes the compressed stream
/// (`None`: not measured: `default`): 6 on very slow links, else 3.
pub fn level_for(bytes_per_s: Option<u64>, default: i32) -> i32 {
    match bytes_per_s {
        None => default,
        Some(r) if r >= SLOW_LINK => 3,
        Some(_) => 6,
    }
}

/// What one host's compressed copy uses, as its `transport` event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    /// `None`: uncompressed (the serve stream).
    pub zstd_level: Option<i32>,
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
///
/// A link that may be fast ([`PROBE_MORE_FROM`]) gets a second, bigger send
/// ([`PROBE_MORE_BYTES`], a few tens of milliseconds there) and the better of the two counts: on a busy machine a send is only ever
/// slowed down (sshd or `cat` waiting for a CPU), and the fixed costs weigh less in a bigger one.
pub async fn probe(conn: &Connection) -> Option<u64> {
    let fixed = send(conn, &[]).await?;
    let data = noise(PROBE_MORE_BYTES);
    let took = send(conn, &data[..PROBE_BYTES]).await?;
    let first = rate(PROBE_BYTES, net_of(took, fixed));
    if first < PROBE_MORE_FROM {
        return Some(first);
    }
    let second = match send(conn, &data).await {
        Some(took) => rate(PROBE_MORE_BYTES, net_of(took, fixed)),
        None => 0,
    };
    Some(first.max(second))
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
        // A 10 Gbit/s LAN, and a veth on this machine: CPU-bound, uncompressed.
        assert_eq!(link_use(Some(1_250_000_000), 3), LinkUse::Uncompressed);
        assert_eq!(link_use(Some(FAST_LINK), 3), LinkUse::Uncompressed);
        assert_eq!(link_use(Some(FAST_LINK - 1), 3), LinkUse::Zstd(3));
        assert_eq!(link_use(None, 3), LinkUse::Zstd(3));
        assert_eq!(link_use(Some(2_500_000), 3), LinkUse::Zstd(3));
        assert_eq!(link_use(Some(500_000), 3), LinkUse::Zstd(6));
        // A fast host that must take the compressed stream (no store session): level 3.
        assert_eq!(level_for(Some(1_250_000_000), 3), 3);
        // 100 Mbit/s: level 3.
        assert_eq!(level_for(Some(12_500_000), 3), 3);
        assert_eq!(level_for(Some(SLOW_LINK), 3), 3);
        // 20 Mbit/s: level 3; a 4 Mbit/s uplink: level 6.
        assert_eq!(level_for(Some(2_500_000), 3), 3);
        assert_eq!(level_for(Some(500_000), 3), 6);
        assert_eq!(level_for(Some(SLOW_LINK - 1), 3), 6);
        assert_eq!(level_for(Some(0), 3), 6);
    }

    #[test]
    fn hosts_probed_together_share_the_fast_class() {
        use LinkUse::*;
        // LAN hosts probed at once on a busy machine (measured here: 5 to 95 MB/s).
        let lan = [95, 92, 31, 14, 8, 6].map(|mb| Some(mb * 1_000_000));
        assert!(link_uses(&lan, 3).iter().all(|u| *u == Uncompressed));
        // A 20 Mbit/s host among them stays compressed, and one not measured gets the default.
        let mixed = [Some(95_000_000), Some(2_500_000), None];
        assert_eq!(link_uses(&mixed, 3), vec![Uncompressed, Zstd(3), Zstd(3)]);
        // Nobody fast: each by its own rate.
        let slow = [Some(12_000_000), Some(900_000)];
        assert_eq!(link_uses(&slow, 3), vec![Zstd(3), Zstd(6)]);
        // One host far faster than the rest (next to the deployer) does not split the LAN.
        let outlier = [1600, 95, 92, 90, 88, 14, 8, 6].map(|mb| Some(mb * 1_000_000));
        assert!(link_uses(&outlier, 3).iter().all(|u| *u == Uncompressed));
        // A 20 Mbit/s host next to a LAN at 30 MB/s (within 16×) is still compressed.
        let near = [Some(30_000_000), Some(2_500_000)];
        assert_eq!(link_uses(&near, 3), vec![Uncompressed, Zstd(3)]);
        // Most hosts slow, one fast: the fast one alone takes the serve stream.
        let few = [40, 3, 3, 3].map(|mb| Some(mb * 1_000_000));
        assert_eq!(
            link_uses(&few, 3),
            vec![Uncompressed, Zstd(3), Zstd(3), Zstd(3)]
        );
    }

    #[test]
    fn upper_quartile_is_nearest_rank() {
        assert_eq!(upper_quartile(vec![]), 0);
        assert_eq!(upper_quartile(vec![7]), 7);
        assert_eq!(upper_quartile(vec![1, 2]), 2);
        assert_eq!(upper_quartile(vec![4, 1, 3, 2]), 3);
        assert_eq!(upper_quartile(vec![6, 8, 14, 31, 92, 95]), 92);
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
