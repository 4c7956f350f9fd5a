//! The segments of a compressed copy: runs of paths lacked by exactly the same hosts, in an
//! order that keeps every path after its references (see `compressed.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use fleet_store::{PathInfo, StorePath};

/// Paths lacked by exactly `members` (indices of targets), in dependency order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    pub members: Vec<usize>,
    pub paths: BTreeSet<StorePath>,
}

/// Cuts the paths some target lacks into segments (see the module docs). `infos` is in
/// dependency order; `missing[i]` is what target `i` lacks.
pub(crate) fn plan_segments(infos: &[PathInfo], missing: &[&BTreeSet<StorePath>]) -> Vec<Segment> {
    // The paths someone lacks, and who.
    let sent: Vec<(usize, Vec<usize>)> = infos
        .iter()
        .enumerate()
        .filter_map(|(k, info)| {
            let who: Vec<usize> = (0..missing.len())
                .filter(|&i| missing[i].contains(&info.path))
                .collect();
            (!who.is_empty()).then_some((k, who))
        })
        .collect();
    let index: HashMap<&StorePath, usize> = sent
        .iter()
        .enumerate()
        .map(|(n, (k, _))| (&infos[*k].path, n))
        .collect();
    let mut waiting = vec![0usize; sent.len()];
    let mut referrers = vec![Vec::new(); sent.len()];
    for (n, (k, _)) in sent.iter().enumerate() {
        let info = &infos[*k];
        for r in &info.references {
            if *r != info.path {
                if let Some(&m) = index.get(r) {
                    waiting[n] += 1;
                    referrers[m].push(n);
                }
            }
        }
    }
    // Ready paths by who lacks them, each set in `infos` order.
    let mut ready: BTreeMap<&[usize], BTreeSet<usize>> = BTreeMap::new();
    for (n, (_, who)) in sent.iter().enumerate() {
        if waiting[n] == 0 {
            ready.entry(who.as_slice()).or_default().insert(n);
        }
    }
    let mut segments: Vec<Segment> = Vec::new();
    let mut current: Option<&[usize]> = None;
    loop {
        let who = match current.filter(|c| ready.contains_key(c)) {
            Some(c) => c,
            None => {
                // Switch to the set of hosts with the most members (the shared part first),
                // then the one whose next path comes first.
                let Some(who) = ready
                    .iter()
                    .max_by_key(|(who, paths)| {
                        (
                            who.len(),
                            std::cmp::Reverse(paths.first().copied().unwrap_or(usize::MAX)),
                        )
                    })
                    .map(|(who, _)| *who)
                else {
                    break;
                };
                segments.push(Segment {
                    members: who.to_vec(),
                    paths: BTreeSet::new(),
                });
                who
            }
        };
        let set = ready.get_mut(who).expect("chosen from ready");
        let n = set.pop_first().expect("ready sets are not empty");
        if set.is_empty() {
            ready.remove(who);
        }
        segments
            .last_mut()
            .expect("a segment was started")
            .paths
            .insert(infos[sent[n].0].path.clone());
        for &r in &referrers[n] {
            waiting[r] -= 1;
            if waiting[r] == 0 {
                ready.entry(sent[r].1.as_slice()).or_default().insert(r);
            }
        }
        current = Some(who);
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(name: &str) -> StorePath {
        StorePath::new(format!("/nix/store/{}-{name}", "a".repeat(32))).unwrap()
    }

    fn info(name: &str, refs: &[&str]) -> PathInfo {
        PathInfo {
            path: path(name),
            deriver: None,
            nar_hash: String::new(),
            nar_size: 1,
            references: refs.iter().map(|r| path(r)).collect(),
            sigs: Vec::new(),
            ca: None,
        }
    }

    fn set(names: &[&str]) -> BTreeSet<StorePath> {
        names.iter().map(|n| path(n)).collect()
    }

    fn names(seg: &Segment) -> Vec<String> {
        seg.paths.iter().map(|p| p.name().to_owned()).collect()
    }

    #[test]
    fn shared_paths_go_first_in_one_segment_then_one_per_host() {
        // libs shared by both hosts; each host has its own top, interleaved in `infos`.
        let infos = vec![
            info("lib1", &[]),
            info("top1", &["lib1", "lib2"]),
            info("lib2", &["lib1"]),
            info("top2", &["lib2"]),
            info("lib3", &[]),
        ];
        let h1 = set(&["lib1", "lib2", "lib3", "top1"]);
        let h2 = set(&["lib1", "lib2", "lib3", "top2"]);
        let segs = plan_segments(&infos, &[&h1, &h2]);
        assert_eq!(segs.len(), 3, "{segs:?}");
        assert_eq!(segs[0].members, vec![0, 1]);
        assert_eq!(names(&segs[0]), vec!["lib1", "lib2", "lib3"]);
        assert_eq!(
            (segs[1].members.clone(), names(&segs[1])),
            (vec![0], vec!["top1".into()])
        );
        assert_eq!(
            (segs[2].members.clone(), names(&segs[2])),
            (vec![1], vec!["top2".into()])
        );
    }

    #[test]
    fn every_host_gets_references_before_referrers() {
        // h2 already has `b`; `c` needs `b` on h1 and is lacked by both.
        let infos = vec![
            info("a", &[]),
            info("b", &["a"]),
            info("c", &["b"]),
            info("d", &["c"]),
        ];
        let h1 = set(&["a", "b", "c", "d"]);
        let h2 = set(&["c"]);
        let h3 = BTreeSet::new();
        let segs = plan_segments(&infos, &[&h1, &h2, &h3]);
        for (host, lacks) in [(0usize, &h1), (1, &h2)] {
            let order: Vec<StorePath> = segs
                .iter()
                .filter(|s| s.members.contains(&host))
                .flat_map(|s| {
                    infos
                        .iter()
                        .filter(|i| s.paths.contains(&i.path))
                        .map(|i| i.path.clone())
                })
                .collect();
            assert_eq!(order.len(), lacks.len());
            for (k, p) in order.iter().enumerate() {
                let info = infos.iter().find(|i| &i.path == p).unwrap();
                for r in &info.references {
                    if lacks.contains(r) {
                        assert!(order[..k].contains(r), "{p} before its reference {r}");
                    }
                }
            }
        }
        assert!(segs.iter().all(|s| !s.members.contains(&2)));
        assert!(plan_segments(&infos, &[&h3]).is_empty());
    }
}
