//! `--on` host selection: comma-separated names, globs (`web-*`, `pi?`) and tags (`@pi`).

use crate::error::SelectError;
use crate::types::{Host, Inventory};

impl Inventory {
    /// The hosts a selector picks, in file order, without duplicates. `None` selects every host.
    ///
    /// Terms are separated by commas; a term is a host name, a glob over host names (`*` any
    /// run of characters, `?` one character) or `@tag` (the tag may be a glob too). The result is
    /// the union of the terms, minus the hosts of the terms written `!term` (`@pi,!pi3`; `!nas`
    /// alone is every host but nas). A term that matches no host is an error listing what
    /// exists; so is a selection that excludes every host.
    pub fn select(&self, selector: Option<&str>) -> Result<Vec<&Host>, SelectError> {
        let Some(selector) = selector else {
            return Ok(self.hosts.iter().collect());
        };
        let terms: Vec<&str> = selector.split(',').map(str::trim).collect();
        if terms.iter().all(|t| t.is_empty()) {
            return Err(SelectError::Empty);
        }
        // `!term` excludes (whatever the order of the terms); with no including term, the
        // exclusions apply to every host.
        let terms: Vec<(&str, bool)> = terms
            .into_iter()
            .filter(|t| !t.is_empty())
            .map(|t| match t.strip_prefix('!') {
                Some(rest) => (rest.trim(), false),
                None => (t, true),
            })
            .collect();
        let includes = terms.iter().any(|(_, keep)| *keep);
        let mut chosen = vec![!includes; self.hosts.len()];
        let mut unmatched = Vec::new();
        for pass in [true, false] {
            for (pattern, keep) in terms.iter().filter(|(_, k)| *k == pass) {
                let mut any = false;
                for (host, chosen) in self.hosts.iter().zip(chosen.iter_mut()) {
                    let hit = match pattern.strip_prefix('@') {
                        Some(tag) => host.tags.iter().any(|t| glob(tag, t)),
                        None => glob(pattern, host.name.as_str()),
                    };
                    if hit {
                        any = true;
                        *chosen = *keep;
                    }
                }
                if !any {
                    unmatched.push(if *keep {
                        (*pattern).to_owned()
                    } else {
                        format!("!{pattern}")
                    });
                }
            }
        }
        if !unmatched.is_empty() {
            return Err(SelectError::NoMatch {
                unmatched,
                hosts: self.hosts.iter().map(|h| h.name.to_string()).collect(),
                tags: self.tags().into_iter().map(str::to_owned).collect(),
            });
        }
        if !chosen.iter().any(|c| *c) {
            return Err(SelectError::NothingLeft {
                selector: selector.to_owned(),
            });
        }
        Ok(self
            .hosts
            .iter()
            .zip(chosen)
            .filter_map(|(h, c)| c.then_some(h))
            .collect())
    }
}

/// Whether `text` matches `pattern` (`*`: any run, `?`: one character). Iterative, no recursion.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ti = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::types::{BuildMode, HostName, SudoMode, System};

    fn host(name: &str, tags: &[&str]) -> Host {
        Host {
            name: HostName::new(name).unwrap(),
            address: name.to_owned(),
            user: "root".to_owned(),
            port: 22,
            system: System::new("x86_64-linux").unwrap(),
            source: crate::types::HostSource::Pinned {
                pin: "nixpkgs".to_owned(),
                config: "/c.nix".into(),
            },
            tags: tags.iter().map(|t| t.to_string()).collect(),
            sudo: SudoMode::None,
            build: BuildMode::Local,
            host_key: None,
            identity_file: None,
            known_hosts: None,
            confirm_timeout: Duration::from_secs(30),
            checks: None,
            substitute: false,
            relay: None,
            set_in_file: Default::default(),
            nix_path: Default::default(),
        }
    }

    fn fleet() -> Inventory {
        Inventory {
            secrets: Vec::new(),
            build: Default::default(),
            pins: Default::default(),
            hosts: vec![
                host("pi1", &["pi", "garden"]),
                host("web-1", &["web"]),
                host("pi2", &["pi"]),
                host("web-2", &["web"]),
                host("nas", &[]),
            ],
        }
    }

    fn names(sel: &str) -> Vec<String> {
        fleet()
            .select(Some(sel))
            .unwrap()
            .iter()
            .map(|h| h.name.to_string())
            .collect()
    }

    #[test]
    fn globs() {
        assert!(glob("web-*", "web-1"));
        assert!(glob("*", ""));
        assert!(glob("p?1", "pi1"));
        assert!(glob("*-*-*", "a-b-c"));
        assert!(!glob("p?1", "pi12"));
        assert!(!glob("web-*", "web"));
        assert!(glob("a*b*c", "aXbYbZc"));
    }

    #[test]
    fn selection_is_a_union_in_file_order() {
        assert_eq!(names("nas,@pi"), ["pi1", "pi2", "nas"]);
        assert_eq!(names("web-*, pi1 ,@web"), ["pi1", "web-1", "web-2"]);
        assert_eq!(names("pi?"), ["pi1", "pi2"]);
        assert_eq!(names("@gar*"), ["pi1"]);
        assert_eq!(fleet().select(None).unwrap().len(), 5);
    }

    #[test]
    fn terms_matching_nothing_are_errors() {
        let err = fleet().select(Some("pi1,db-*,@gpu")).unwrap_err();
        assert_eq!(
            err,
            SelectError::NoMatch {
                unmatched: vec!["db-*".into(), "@gpu".into()],
                hosts: ["pi1", "web-1", "pi2", "web-2", "nas"]
                    .map(String::from)
                    .to_vec(),
                tags: ["garden", "pi", "web"].map(String::from).to_vec(),
            }
        );
        assert_eq!(fleet().select(Some(" , ")).unwrap_err(), SelectError::Empty);
    }

    #[test]
    fn exclusions() {
        assert_eq!(names("@pi,!pi2"), ["pi1"]);
        assert_eq!(names("!pi2,@pi"), ["pi1"], "order does not matter");
        assert_eq!(
            names("!@web"),
            ["pi1", "pi2", "nas"],
            "alone: from every host"
        );
        assert_eq!(names("web-*,!web-1,nas"), ["web-2", "nas"]);
        assert_eq!(
            fleet().select(Some("@pi,!pi9")).unwrap_err(),
            SelectError::NoMatch {
                unmatched: vec!["!pi9".into()],
                hosts: ["pi1", "web-1", "pi2", "web-2", "nas"]
                    .map(String::from)
                    .to_vec(),
                tags: ["garden", "pi", "web"].map(String::from).to_vec(),
            }
        );
        assert_eq!(
            fleet().select(Some("@pi,!pi*")).unwrap_err(),
            SelectError::NothingLeft {
                selector: "@pi,!pi*".into()
            }
        );
    }
}
