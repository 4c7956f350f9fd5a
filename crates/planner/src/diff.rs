//! Closure diffs from store path names, in the spirit of `nix store diff-closures`.
//!
//! Both closures are grouped by package name (Nix's `DrvName` rule, outputs such as `-bin` folded
//! into their package). Per name the sets of versions are compared: a name only in the new closure
//! is *added*, one only in the old closure is *removed*, one whose versions differ is *changed*,
//! and one with the same versions but different store paths is counted as *rebuilt*.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use fleet_types::store_name::{parse_name, split_hash};

/// A package (one name at one version) that was added or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pkg {
    pub name: String,
    /// Empty for store paths without a version.
    pub version: String,
}

/// A package whose versions changed.
///
/// `from` and `to` are versions joined by `", "` when several versions of one name are in a
/// closure; versions present on both sides are left out as long as each side keeps one. An empty
/// version is written `(none)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub name: String,
    pub from: String,
    pub to: String,
}

/// The difference between the current and the desired system's closure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diff {
    /// `false` when no diff was computed: a fresh install, an error, or the current closure is
    /// unknown. The lists are then empty.
    pub compared: bool,
    pub added: Vec<Pkg>,
    pub removed: Vec<Pkg>,
    pub changed: Vec<Change>,
    /// Packages whose store paths changed while name and versions stayed the same.
    pub rebuilt: usize,
}

impl Diff {
    /// Whether there is nothing to show (no package added, removed, changed or rebuilt).
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.rebuilt == 0
    }
}

/// Whether a store path takes part in the diff at all: derivations and fetched sources (`source`,
/// `*-source`: they carry no version, a changed pin shows through the packages) do not, nor do a
/// deployment package's configuration files (`fleet-config`: the plan says "configuration files
/// changed" for those), nor the paths in `skip` (the toplevels and the deployment package).
fn counts(path: &str, skip: &BTreeSet<&str>) -> bool {
    let (_, name) = split_hash(path);
    !(skip.contains(path)
        || name.is_empty()
        || name.ends_with(".drv")
        || name == "source"
        || name == "fleet-config"
        || name.ends_with("-source"))
}

/// name → version → store paths.
type Grouped<'a> = BTreeMap<&'a str, BTreeMap<&'a str, BTreeSet<&'a str>>>;

fn group<'a>(paths: impl IntoIterator<Item = &'a str>, skip: &BTreeSet<&str>) -> Grouped<'a> {
    let mut grouped = Grouped::new();
    for path in paths {
        if !counts(path, skip) {
            continue;
        }
        let (_, name) = split_hash(path);
        let parsed = parse_name(name);
        grouped
            .entry(parsed.name)
            .or_default()
            .entry(parsed.version)
            .or_default()
            .insert(path);
    }
    grouped
}

/// Compare two versions like Nix does, roughly: runs of digits numerically, the rest as text.
pub(crate) fn compare_versions(a: &str, b: &str) -> Ordering {
    fn parts(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[i - 1].is_ascii_digit() {
                out.push(&s[start..i]);
                start = i;
            }
        }
        out
    }
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let ord = match (x.parse::<u128>(), y.parse::<u128>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    pa.len().cmp(&pb.len()).then_with(|| a.cmp(b))
}

fn sorted_versions<'a>(versions: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = versions.into_iter().collect();
    v.sort_by(|a, b| compare_versions(a, b));
    v
}

fn join_versions(versions: &[&str]) -> String {
    versions
        .iter()
        .map(|v| if v.is_empty() { "(none)" } else { v })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Diff two closures. `skip` holds store paths left out on both sides.
pub fn diff_closures<'a>(
    before: impl IntoIterator<Item = &'a str>,
    after: impl IntoIterator<Item = &'a str>,
    skip: &BTreeSet<&str>,
) -> Diff {
    let before = group(before, skip);
    let after = group(after, skip);
    let mut diff = Diff {
        compared: true,
        ..Diff::default()
    };
    let names: BTreeSet<&str> = before.keys().chain(after.keys()).copied().collect();
    for name in names {
        match (before.get(name), after.get(name)) {
            (None, Some(new)) => diff.added.extend(
                sorted_versions(new.keys().copied())
                    .into_iter()
                    .map(|v| Pkg {
                        name: name.to_owned(),
                        version: v.to_owned(),
                    }),
            ),
            (Some(old), None) => diff.removed.extend(
                sorted_versions(old.keys().copied())
                    .into_iter()
                    .map(|v| Pkg {
                        name: name.to_owned(),
                        version: v.to_owned(),
                    }),
            ),
            (Some(old), Some(new)) => {
                let old_versions: BTreeSet<&str> = old.keys().copied().collect();
                let new_versions: BTreeSet<&str> = new.keys().copied().collect();
                if old_versions == new_versions {
                    if old != new {
                        diff.rebuilt += 1;
                    }
                    continue;
                }
                let only_old: Vec<&str> = old_versions.difference(&new_versions).copied().collect();
                let only_new: Vec<&str> = new_versions.difference(&old_versions).copied().collect();
                let (from, to) = if only_old.is_empty() || only_new.is_empty() {
                    (
                        old_versions.into_iter().collect::<Vec<_>>(),
                        new_versions.into_iter().collect(),
                    )
                } else {
                    (only_old, only_new)
                };
                diff.changed.push(Change {
                    name: name.to_owned(),
                    from: join_versions(&sorted_versions(from)),
                    to: join_versions(&sorted_versions(to)),
                });
            }
            (None, None) => unreachable!("name comes from one of the maps"),
        }
    }
    diff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(hash: &str, name: &str) -> String {
        format!("/nix/store/{hash:a<32}-{name}")
    }

    fn run(before: &[String], after: &[String]) -> Diff {
        diff_closures(
            before.iter().map(String::as_str),
            after.iter().map(String::as_str),
            &BTreeSet::new(),
        )
    }

    fn pkg(name: &str, version: &str) -> Pkg {
        Pkg {
            name: name.into(),
            version: version.into(),
        }
    }

    fn change(name: &str, from: &str, to: &str) -> Change {
        Change {
            name: name.into(),
            from: from.into(),
            to: to.into(),
        }
    }

    #[test]
    fn added_removed_changed_sorted_by_name() {
        let before = [
            sp("1", "openssl-3.0.13"),
            sp("2", "nano-7.2"),
            sp("3", "bash-5.2p26"),
            sp("4", "zlib-1.3.1"),
        ];
        let after = [
            sp("5", "openssl-3.0.14"),
            sp("6", "htop-3.3.0"),
            sp("3", "bash-5.2p26"),
            sp("7", "atop-2.10.0"),
            sp("4", "zlib-1.3.1"),
        ];
        let d = run(&before, &after);
        assert!(d.compared);
        assert_eq!(d.added, vec![pkg("atop", "2.10.0"), pkg("htop", "3.3.0")]);
        assert_eq!(d.removed, vec![pkg("nano", "7.2")]);
        assert_eq!(d.changed, vec![change("openssl", "3.0.13", "3.0.14")]);
        assert_eq!(d.rebuilt, 0);
    }

    #[test]
    fn same_name_and_version_with_new_hash_is_rebuilt_not_changed() {
        let before = [
            sp("1", "curl-8.7.1"),
            sp("2", "etc"),
            sp("3", "curl-8.7.1-bin"),
        ];
        let after = [
            sp("4", "curl-8.7.1"),
            sp("5", "etc"),
            sp("3", "curl-8.7.1-bin"),
        ];
        let d = run(&before, &after);
        assert!(d.added.is_empty() && d.removed.is_empty() && d.changed.is_empty());
        assert_eq!(d.rebuilt, 2);
    }

    #[test]
    fn names_with_dashes_and_outputs() {
        let before = [
            sp("1", "python3-3.11.9"),
            sp("2", "xz-5.4.6"),
            sp("3", "xz-5.4.6-bin"),
            sp("4", "python3.11-requests-2.31.0"),
        ];
        let after = [
            sp("5", "python3-3.11.10"),
            sp("6", "xz-5.6.2"),
            sp("7", "xz-5.6.2-bin"),
            sp("8", "xz-5.6.2-man"),
            sp("4", "python3.11-requests-2.31.0"),
        ];
        let d = run(&before, &after);
        assert!(d.added.is_empty(), "{d:?}");
        assert!(d.removed.is_empty(), "{d:?}");
        assert_eq!(
            d.changed,
            vec![
                change("python3", "3.11.9", "3.11.10"),
                change("xz", "5.4.6", "5.6.2"),
            ]
        );
    }

    #[test]
    fn multiple_versions_of_one_name() {
        // One of two versions upgraded: only the differing ones are shown.
        let before = [sp("1", "python3-3.11.9"), sp("2", "python3-3.12.3")];
        let after = [sp("1", "python3-3.11.9"), sp("3", "python3-3.12.4")];
        assert_eq!(
            run(&before, &after).changed,
            vec![change("python3", "3.12.3", "3.12.4")]
        );
        // One of two versions dropped: the full sets are shown.
        let after = [sp("2", "python3-3.12.3")];
        assert_eq!(
            run(&before, &after).changed,
            vec![change("python3", "3.11.9, 3.12.3", "3.12.3")]
        );
        // A second version appears: versions sorted numerically, not as text.
        let before = [sp("1", "gcc-9.5.0")];
        let after = [sp("1", "gcc-9.5.0"), sp("2", "gcc-13.2.0")];
        assert_eq!(
            run(&before, &after).changed,
            vec![change("gcc", "9.5.0", "9.5.0, 13.2.0")]
        );
        // Both versions new: two added entries.
        let d = run(&[], &[sp("2", "lua-5.4.6"), sp("1", "lua-5.1.5")]);
        assert_eq!(d.added, vec![pkg("lua", "5.1.5"), pkg("lua", "5.4.6")]);
    }

    #[test]
    fn skipped_paths_sources_and_derivations_are_ignored() {
        let top_old = sp("1", "nixos-system-pi1-24.05.1");
        let top_new = sp("2", "nixos-system-pi1-24.05.2");
        let before = [
            top_old.clone(),
            sp("3", "source"),
            sp("4", "hello-2.12.drv"),
        ];
        let after = [
            top_new.clone(),
            sp("5", "source"),
            sp("6", "nixpkgs-source"),
            sp("8", "fleet-config"),
            sp("7", "fleet-deploy-pi1"),
        ];
        let package = after[4].clone();
        let skip: BTreeSet<&str> = [top_old.as_str(), top_new.as_str(), package.as_str()].into();
        let d = diff_closures(
            before.iter().map(String::as_str),
            after.iter().map(String::as_str),
            &skip,
        );
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn unversioned_names() {
        let d = run(
            &[sp("1", "unit-nano.service")],
            &[sp("2", "unit-htop.service")],
        );
        assert_eq!(d.added, vec![pkg("unit-htop.service", "")]);
        assert_eq!(d.removed, vec![pkg("unit-nano.service", "")]);
        let d = run(&[sp("1", "tool")], &[sp("2", "tool-1.0")]);
        assert_eq!(d.changed, vec![change("tool", "(none)", "1.0")]);
    }

    #[test]
    fn version_order() {
        assert_eq!(compare_versions("3.9", "3.10"), Ordering::Less);
        assert_eq!(compare_versions("1.0", "1.0"), Ordering::Equal);
        assert_eq!(compare_versions("1.0", "1.0.1"), Ordering::Less);
        assert_eq!(compare_versions("5.2p26", "5.2p9"), Ordering::Greater);
    }
}
