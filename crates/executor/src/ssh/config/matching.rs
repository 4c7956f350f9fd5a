//! `Host` patterns, OpenSSH pattern lists and `Match` criteria.

/// One `Match` criterion, `!` kept in `negated`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Criterion {
    pub negated: bool,
    pub kind: Crit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Crit {
    All,
    /// `canonical` and `final`: true in the final pass only.
    Canonical,
    Final,
    Host(String),
    OriginalHost(String),
    User(String),
    LocalUser(String),
    Exec(String),
    /// A criterion newer OpenSSH knows (`localnetwork`, `tagged`, ...): never matches, warned.
    Unsupported(String),
}

impl Criterion {
    /// Parses the arguments of a `Match` line.
    pub fn parse_line(args: &[String]) -> Result<Vec<Criterion>, String> {
        if args.is_empty() {
            return Err("`Match` needs criteria (e.g. `Match host NAME` or `Match all`)".into());
        }
        let mut out = Vec::new();
        let mut it = args.iter();
        while let Some(word) = it.next() {
            let (negated, name) = match word.strip_prefix('!') {
                Some(n) => (true, n),
                None => (false, word.as_str()),
            };
            let lname = name.to_ascii_lowercase();
            let kind = match lname.as_str() {
                "all" => Crit::All,
                "canonical" => Crit::Canonical,
                "final" => Crit::Final,
                _ => {
                    let Some(arg) = it.next() else {
                        return Err(format!("`Match {name}` needs an argument"));
                    };
                    match lname.as_str() {
                        "host" => Crit::Host(arg.clone()),
                        "originalhost" => Crit::OriginalHost(arg.clone()),
                        "user" => Crit::User(arg.clone()),
                        "localuser" => Crit::LocalUser(arg.clone()),
                        "exec" => Crit::Exec(arg.clone()),
                        "localnetwork" | "tagged" | "version" | "sessiontype" | "command" => {
                            Crit::Unsupported(name.to_owned())
                        }
                        _ => return Err(format!("unknown `Match` criterion `{name}`")),
                    }
                }
            };
            out.push(Criterion { negated, kind });
        }
        let others = out
            .iter()
            .filter(|c| !matches!(c.kind, Crit::Canonical | Crit::Final))
            .count();
        if out.iter().any(|c| c.kind == Crit::All) && others > 1 {
            return Err("`Match all` may only be combined with `canonical` or `final`".into());
        }
        Ok(out)
    }
}

/// A `Host` line: true if some pattern matches and no `!pattern` does. Case-sensitive, as
/// OpenSSH compares the name as given (it lowercases only the `HostName` result).
pub(super) fn host_line_matches(patterns: &[String], host: &str) -> bool {
    let mut positive = false;
    for p in patterns {
        let (neg, glob) = match p.strip_prefix('!') {
            Some(g) => (true, g),
            None => (false, p.as_str()),
        };
        if glob_match(glob.as_bytes(), host.as_bytes()) {
            if neg {
                return false;
            }
            positive = true;
        }
    }
    positive
}

/// OpenSSH's `match_pattern_list`: comma-separated patterns, `!` negates; a matching negated
/// pattern makes the whole list fail. `lower`: compare ASCII case-insensitively (host names).
pub(super) fn pattern_list_matches(s: &str, list: &str, lower: bool) -> bool {
    let (s, list) = if lower {
        (s.to_ascii_lowercase(), list.to_ascii_lowercase())
    } else {
        (s.to_owned(), list.to_owned())
    };
    let mut positive = false;
    for p in list.split(',') {
        let (neg, glob) = match p.strip_prefix('!') {
            Some(g) => (true, g),
            None => (false, p),
        };
        if glob_match(glob.as_bytes(), s.as_bytes()) {
            if neg {
                return false;
            }
            positive = true;
        }
    }
    positive
}

/// `*` any run, `?` one character; exact bytes otherwise.
pub(crate) fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == s[i]) {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

/// Runs a `Match exec` command like OpenSSH: `/bin/sh -c COMMAND`, stdin/stdout/stderr to
/// /dev/null; true if it exits 0. A command that cannot start is false.
pub(super) fn run_exec(command: &str) -> bool {
    std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
