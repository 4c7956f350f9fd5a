//! Reading ssh_config text into lines fleet acts on, with `Include`s read in place.

use std::path::{Path, PathBuf};

use super::matching::{glob_match, Crit, Criterion};
use super::SshConfigError;

/// OpenSSH's `READCONF_MAX_DEPTH`: deeper `Include` nesting is an error (a loop, usually).
pub(super) const MAX_INCLUDE_DEPTH: usize = 16;

/// One file, its lines in order.
#[derive(Debug, Clone, Default)]
pub(super) struct File {
    pub path: String,
    pub items: Vec<Item>,
}

/// The keywords fleet uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kw {
    HostName,
    User,
    Port,
    IdentityFile,
    ProxyJump,
}

#[derive(Debug, Clone)]
pub(super) enum Item {
    /// `Host` patterns as written (`!` kept).
    Host(Vec<String>),
    Match {
        criteria: Vec<Criterion>,
        line: usize,
    },
    Set {
        kw: Kw,
        value: String,
        line: usize,
    },
    /// The files one `Include` line matched, each read already (in glob order).
    Include(Vec<File>),
}

/// Reads files; `home` anchors relative `Include` paths (`~/.ssh/`) and `~`.
pub(super) struct Loader<'a> {
    pub home: &'a Path,
    pub warnings: Vec<String>,
}

impl Loader<'_> {
    /// Reads and parses `path`. A missing top-level file is `Ok(None)`.
    pub fn load(&mut self, path: &Path, depth: usize) -> Result<Option<File>, SshConfigError> {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => self.parse(&text, &origin, depth).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SshConfigError {
                path: origin,
                line: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }

    pub fn parse(
        &mut self,
        text: &str,
        origin: &str,
        depth: usize,
    ) -> Result<File, SshConfigError> {
        let mut file = File {
            path: origin.to_owned(),
            items: Vec::new(),
        };
        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            let err = |message: String| SshConfigError {
                path: origin.to_owned(),
                line,
                message,
            };
            let Some((keyword, rest)) = split_keyword(raw) else {
                continue;
            };
            let args = split_args(rest).map_err(err)?;
            let one = |args: Vec<String>| {
                <[String; 1]>::try_from(args)
                    .map(|[v]| v)
                    .map_err(|a| err(format!("`{keyword}` takes one value, got {}", a.len())))
            };
            let kw = match keyword.to_ascii_lowercase().as_str() {
                "host" => {
                    if args.is_empty() || args.iter().any(|a| a.is_empty() || a == "!") {
                        return Err(err("`Host` needs at least one non-empty pattern".into()));
                    }
                    file.items.push(Item::Host(args));
                    continue;
                }
                "match" => {
                    let criteria = Criterion::parse_line(&args).map_err(err)?;
                    for c in &criteria {
                        if let Crit::Unsupported(name) = &c.kind {
                            self.warnings.push(format!(
                                "{origin}:{line}: `Match {name}` is not supported by fleet; it never matches"
                            ));
                        }
                    }
                    file.items.push(Item::Match { criteria, line });
                    continue;
                }
                "include" => {
                    if args.is_empty() {
                        return Err(err("`Include` needs a file".into()));
                    }
                    if depth >= MAX_INCLUDE_DEPTH {
                        return Err(err(format!(
                            "`Include` nested more than {MAX_INCLUDE_DEPTH} deep (a file including itself?)"
                        )));
                    }
                    for arg in args {
                        let pattern = self.include_path(&arg);
                        let mut files = Vec::new();
                        for path in glob_paths(&pattern) {
                            if let Some(f) = self.load(&path, depth + 1)? {
                                files.push(f);
                            }
                        }
                        file.items.push(Item::Include(files));
                    }
                    continue;
                }
                "hostname" => Kw::HostName,
                "user" => Kw::User,
                "identityfile" => Kw::IdentityFile,
                "proxyjump" => Kw::ProxyJump,
                "port" => {
                    let v = one(args)?;
                    match v.parse::<u16>() {
                        Ok(p) if p > 0 => {}
                        _ => return Err(err(format!("invalid port `{v}`"))),
                    }
                    file.items.push(Item::Set {
                        kw: Kw::Port,
                        value: v,
                        line,
                    });
                    continue;
                }
                _ => continue,
            };
            let value = one(args)?;
            file.items.push(Item::Set { kw, value, line });
        }
        Ok(file)
    }

    /// OpenSSH's rule for a user config: `/...` and `~...` as written, else under `~/.ssh/`.
    fn include_path(&self, arg: &str) -> String {
        if let Some(rest) = arg.strip_prefix("~/") {
            format!("{}/{rest}", self.home.display())
        } else if arg == "~" {
            self.home.display().to_string()
        } else if arg.starts_with('/') {
            arg.to_owned()
        } else {
            format!("{}/.ssh/{arg}", self.home.display())
        }
    }
}

/// Expands `*` and `?` in each path component like glob(3) (a leading `.` must be written),
/// results sorted. A path without wildcards is returned if it exists.
pub(super) fn glob_paths(pattern: &str) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from(if pattern.starts_with('/') {
        "/"
    } else {
        "."
    })];
    let parts: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
    for part in parts {
        let mut next = Vec::new();
        for dir in &found {
            if !part.contains(['*', '?']) {
                let p = dir.join(part);
                if p.symlink_metadata().is_ok() {
                    next.push(p);
                }
                continue;
            }
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.') || part.starts_with('.'))
                .filter(|n| glob_match(part.as_bytes(), n.as_bytes()))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| dir.join(n)));
        }
        found = next;
    }
    found.sort();
    found
}

/// Splits `Keyword value`, `Keyword=value`, `Keyword = value` (spaces or tabs).
/// `None` for blank lines and comments.
fn split_keyword(line: &str) -> Option<(&str, &str)> {
    let line = line.trim_matches(|c: char| c == ' ' || c == '\t' || c == '\r');
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line.find([' ', '\t', '=']).unwrap_or(line.len());
    let (kw, mut rest) = line.split_at(end);
    rest = rest.trim_start_matches([' ', '\t']);
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start_matches([' ', '\t']);
    }
    Some((kw, rest))
}

/// Splits arguments on spaces/tabs, honouring double quotes; a `#` starting a word ends the line.
fn split_args(rest: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in rest.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '#' if !quoted && !in_word => break,
            ' ' | '\t' if !quoted => {
                if in_word {
                    args.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            _ => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err("unterminated double quote".into());
    }
    if in_word {
        args.push(cur);
    }
    Ok(args)
}
