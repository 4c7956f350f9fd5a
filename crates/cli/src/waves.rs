//! The waves of a rollout (`fleet apply --canary SEL --batch N|N%`): the canary hosts first,
//! alone, then the others in batches, in fleet.toml's order. Pure.

use crate::args::Batch;

/// Splits `hosts` (indexes, in order) into waves. `canary(i)` says whether host `i` is a canary.
/// Without a canary and a batch, one wave holds every host.
pub fn plan(hosts: &[usize], canary: impl Fn(usize) -> bool, batch: Option<Batch>) -> Vec<Wave> {
    let (first, rest): (Vec<usize>, Vec<usize>) = hosts.iter().partition(|&&i| canary(i));
    let mut waves = Vec::new();
    if !first.is_empty() {
        waves.push(Wave {
            hosts: first,
            canary: true,
        });
    }
    let size = match batch {
        None => rest.len().max(1),
        Some(Batch::Hosts(n)) => n.max(1),
        // Of all the hosts to apply, rounded up: 10% of 5 hosts is a wave of 1.
        Some(Batch::Percent(p)) => (hosts.len() * usize::from(p)).div_ceil(100).max(1),
    };
    for chunk in rest.chunks(size) {
        waves.push(Wave {
            hosts: chunk.to_vec(),
            canary: false,
        });
    }
    waves
}

/// One wave: hosts applied together (bounded by `--parallel`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wave {
    pub hosts: Vec<usize>,
    pub canary: bool,
}

/// Why a rollout stops after a wave, if it does: a canary failed, or `--max-failures` is reached.
pub fn stop_reason(
    wave: &Wave,
    failed_in_wave: u64,
    failed_total: u64,
    max_failures: Option<u64>,
) -> Option<String> {
    if wave.canary && failed_in_wave > 0 {
        return Some("the canary failed".to_owned());
    }
    match max_failures {
        Some(k) if failed_total >= k => Some(format!(
            "{failed_total} host(s) failed (--max-failures {k})"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canaries_first_then_batches() {
        let all = [0, 1, 2, 3, 4];
        let w = plan(&all, |i| i == 3, Some(Batch::Hosts(2)));
        let hosts: Vec<Vec<usize>> = w.iter().map(|w| w.hosts.clone()).collect();
        assert_eq!(hosts, vec![vec![3], vec![0, 1], vec![2, 4]]);
        assert!(w[0].canary && !w[1].canary);
        assert_eq!(plan(&all, |_| false, None).len(), 1);
        assert_eq!(plan(&all, |_| false, Some(Batch::Percent(40))).len(), 3);
        assert_eq!(plan(&all, |_| false, Some(Batch::Percent(1))).len(), 5);
        assert!(plan(&[], |_| false, None).is_empty());
    }

    #[test]
    fn stops_on_a_failed_canary_or_too_many_failures() {
        let canary = Wave {
            hosts: vec![0],
            canary: true,
        };
        let wave = Wave {
            hosts: vec![1],
            canary: false,
        };
        assert!(stop_reason(&canary, 1, 1, None).is_some());
        assert!(stop_reason(&wave, 1, 1, None).is_none());
        assert!(stop_reason(&wave, 1, 1, Some(1)).is_some());
        assert!(stop_reason(&wave, 0, 1, Some(2)).is_none());
    }
}
