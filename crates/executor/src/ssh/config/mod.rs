//! `~/.ssh/config`, resolved for one host the way OpenSSH (`ssh -G`) resolves it, for the
//! keywords fleet uses: `HostName`, `User`, `Port`, `IdentityFile` (they accumulate),
//! `ProxyJump`. The first value found wins.
//!
//! - [`parse`]: lines, quoting, comments, `Include` (read in place, globs, nested, at most
//!   16 deep, relative paths from `~/.ssh/`).
//! - [`matching`]: `Host` patterns and `Match` (`all`, `host`, `originalhost`, `user`,
//!   `localuser`, `exec`, `canonical`, `final`, `!`), pattern lists.
//! - [`jump`]: `ProxyJump` hops.
//!
//! Evaluation follows OpenSSH 9.x: a first pass matches `Host` against the name given; if a
//! `Match final` (or `canonical`) was seen, a second pass follows in which `Host` matches the
//! resolved, lower-cased `HostName`, and `final`/`canonical` are true. fleet never
//! canonicalises host names (`CanonicalizeHostname` is ignored), so that second pass is the
//! only "final" one. Every other keyword is ignored. Errors name the file and line.

mod jump;
mod matching;
mod parse;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use jump::{parse_proxy_jump, JumpHost};
use matching::{host_line_matches, pattern_list_matches, run_exec, Crit, Criterion};
use parse::{File, Item, Kw, Loader};

/// A parse or resolution error in an ssh_config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct SshConfigError {
    /// The file (or the origin given to [`SshConfig::parse`]).
    pub path: String,
    /// 1-based line number (0: the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// A parsed ssh_config file with its `Include`s.
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    root: File,
    /// Things fleet reads but cannot act on (`Match` criteria of newer OpenSSH versions, which
    /// fleet treats as not matching), with file and line.
    pub warnings: Vec<String>,
}

/// Who asks: the name given (as to `ssh NAME`), the local user and home directory.
#[derive(Debug, Clone, Copy)]
pub struct HostQuery<'a> {
    pub host: &'a str,
    pub local_user: &'a str,
    pub home: &'a Path,
}

/// What the config says about one host. `None`/empty: nothing set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSettings {
    /// `HostName` with `%h` expanded, lower-cased as OpenSSH does.
    pub host_name: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// `IdentityFile`s in order, `~`, `%` tokens and `${VAR}` expanded. A relative path stays
    /// relative (to the working directory), as in OpenSSH.
    pub identity_files: Vec<PathBuf>,
    /// The same, as written (what `ssh -G` prints).
    pub identity_files_as_written: Vec<String>,
    /// `ProxyJump` as written (comma-separated `[user@]host[:port]`); `None` also for `none`.
    pub proxy_jump: Option<String>,
}

impl SshConfig {
    /// Reads a file (a user config: relative `Include`s are taken from `home/.ssh/`).
    /// A missing file is an empty config.
    pub fn load(path: &Path, home: &Path) -> Result<Self, SshConfigError> {
        let mut loader = Loader {
            home,
            warnings: Vec::new(),
        };
        let root = loader.load(path, 0)?.unwrap_or_default();
        Ok(SshConfig {
            root,
            warnings: loader.warnings,
        })
    }

    /// Parses config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str, home: &Path) -> Result<Self, SshConfigError> {
        let mut loader = Loader {
            home,
            warnings: Vec::new(),
        };
        let root = loader.parse(text, origin, 0)?;
        Ok(SshConfig {
            root,
            warnings: loader.warnings,
        })
    }

    /// Resolves the settings for `q.host`. Errors: a `%` token fleet does not know, an unset
    /// `${VAR}`, a `~user` path.
    pub fn host(&self, q: &HostQuery<'_>) -> Result<HostSettings, SshConfigError> {
        let mut ev = Eval {
            q,
            pass_host: q.host.to_owned(),
            final_pass: false,
            want_final: false,
            st: State::default(),
        };
        ev.file(&self.root, &mut true, false)?;
        if let Some(h) = &mut ev.st.host_name {
            *h = h.to_ascii_lowercase();
        }
        if ev.want_final {
            ev.pass_host = ev
                .st
                .host_name
                .clone()
                .unwrap_or_else(|| q.host.to_ascii_lowercase());
            ev.final_pass = true;
            ev.file(&self.root, &mut true, false)?;
        }
        let st = ev.st;
        let final_host = st
            .host_name
            .clone()
            .unwrap_or_else(|| q.host.to_ascii_lowercase());
        let port = st.port.unwrap_or(22).to_string();
        let ruser = st.user.clone().unwrap_or_else(|| q.local_user.to_owned());
        let home = q.home.display().to_string();
        let uid = uid();
        let tokens = [
            ('d', home.as_str()),
            ('h', final_host.as_str()),
            ('i', uid.as_str()),
            ('n', q.host),
            ('p', port.as_str()),
            ('r', ruser.as_str()),
            ('u', q.local_user),
        ];
        let mut identity_files = Vec::new();
        for (raw, origin, line) in &st.identity {
            if raw.eq_ignore_ascii_case("none") {
                continue;
            }
            let err = |message: String| SshConfigError {
                path: origin.clone(),
                line: *line,
                message,
            };
            let tilde = if let Some(rest) = raw.strip_prefix("~/") {
                format!("{home}/{rest}")
            } else if raw == "~" {
                home.clone()
            } else if raw.starts_with('~') {
                return Err(err(format!("`~user` paths are not supported: `{raw}`")));
            } else {
                raw.clone()
            };
            let path = PathBuf::from(expand(&tilde, &tokens, true).map_err(err)?);
            if !identity_files.contains(&path) {
                identity_files.push(path);
            }
        }
        Ok(HostSettings {
            host_name: st.host_name,
            user: st.user,
            port: st.port,
            identity_files,
            identity_files_as_written: st.identity.into_iter().map(|(r, _, _)| r).collect(),
            proxy_jump: st.proxy_jump,
        })
    }
}

#[derive(Debug, Default)]
struct State {
    host_name: Option<String>,
    user: Option<String>,
    port: Option<u16>,
    /// (as written, file, line), duplicates dropped as OpenSSH does.
    identity: Vec<(String, String, usize)>,
    proxy_seen: bool,
    proxy_jump: Option<String>,
}

struct Eval<'a> {
    q: &'a HostQuery<'a>,
    /// What `Host` lines match: the name given, then (final pass) the resolved host name.
    pass_host: String,
    final_pass: bool,
    want_final: bool,
    st: State,
}

impl Eval<'_> {
    /// `active` is OpenSSH's `activep`; `never`: inside an `Include` read from an inactive
    /// block, where nothing matches.
    fn file(&mut self, f: &File, active: &mut bool, never: bool) -> Result<(), SshConfigError> {
        for item in &f.items {
            match item {
                Item::Host(patterns) => {
                    *active = !never && host_line_matches(patterns, &self.pass_host);
                }
                Item::Match { criteria, line } => {
                    let v = self
                        .criteria(criteria, never)
                        .map_err(|message| SshConfigError {
                            path: f.path.clone(),
                            line: *line,
                            message,
                        })?;
                    *active = !never && v;
                }
                Item::Include(files) => {
                    let outer = *active;
                    for inc in files {
                        self.file(inc, active, never || !outer)?;
                        *active = outer;
                    }
                }
                Item::Set { kw, value, line } if *active => {
                    self.set(*kw, value, &f.path, *line)?;
                }
                Item::Set { .. } => {}
            }
        }
        Ok(())
    }

    fn set(&mut self, kw: Kw, v: &str, origin: &str, line: usize) -> Result<(), SshConfigError> {
        let st = &mut self.st;
        match kw {
            Kw::HostName if st.host_name.is_none() => {
                let h =
                    expand(v, &[('h', self.q.host)], false).map_err(|message| SshConfigError {
                        path: origin.to_owned(),
                        line,
                        message: format!("HostName: {message}"),
                    })?;
                st.host_name = Some(h);
            }
            Kw::User if st.user.is_none() => st.user = Some(v.to_owned()),
            Kw::Port if st.port.is_none() => st.port = v.parse().ok(),
            Kw::ProxyJump if !st.proxy_seen => {
                st.proxy_seen = true;
                if !v.eq_ignore_ascii_case("none") {
                    st.proxy_jump = Some(v.to_owned());
                }
            }
            Kw::IdentityFile if !st.identity.iter().any(|(r, _, _)| r == v) => {
                st.identity.push((v.to_owned(), origin.to_owned(), line));
            }
            _ => {}
        }
        Ok(())
    }

    /// OpenSSH's `match_cfg_line`: all criteria must hold; an `exec` after a failed criterion
    /// is not run.
    fn criteria(&mut self, criteria: &[Criterion], never: bool) -> Result<bool, String> {
        let mut result = true;
        for c in criteria {
            let hit = match &c.kind {
                Crit::All => true,
                Crit::Canonical => self.final_pass,
                Crit::Final => {
                    self.want_final |= !c.negated;
                    self.final_pass
                }
                Crit::Host(list) => pattern_list_matches(&self.match_host(), list, true),
                Crit::OriginalHost(list) => pattern_list_matches(self.q.host, list, true),
                Crit::User(list) => pattern_list_matches(&self.ruser(), list, false),
                Crit::LocalUser(list) => pattern_list_matches(self.q.local_user, list, false),
                Crit::Exec(cmd) => {
                    if !result || never {
                        continue;
                    }
                    let host = self.match_host();
                    let port = self.st.port.unwrap_or(22).to_string();
                    let ruser = self.ruser();
                    let home = self.q.home.display().to_string();
                    let uid = uid();
                    let tokens = [
                        ('d', home.as_str()),
                        ('h', host.as_str()),
                        ('i', uid.as_str()),
                        ('n', self.q.host),
                        ('p', port.as_str()),
                        ('r', ruser.as_str()),
                        ('u', self.q.local_user),
                    ];
                    let cmd =
                        expand(cmd, &tokens, false).map_err(|m| format!("Match exec: {m}"))?;
                    run_exec(&cmd)
                }
                Crit::Unsupported(_) => false,
            };
            if hit == c.negated {
                result = false;
            }
        }
        Ok(result)
    }

    /// `Match host` compares the `HostName` found so far, else the name `Host` lines match.
    fn match_host(&self) -> String {
        self.st
            .host_name
            .clone()
            .unwrap_or_else(|| self.pass_host.clone())
    }

    fn ruser(&self) -> String {
        self.st
            .user
            .clone()
            .unwrap_or_else(|| self.q.local_user.to_owned())
    }
}

/// Expands `%%` and the given `%x` tokens (others are an error, as in OpenSSH); with `env`,
/// also `${VAR}` (an unset variable is an error).
fn expand(v: &str, tokens: &[(char, &str)], env: bool) -> Result<String, String> {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '%' => match chars.next() {
                Some('%') => out.push('%'),
                Some(t) => match tokens.iter().find(|(k, _)| *k == t) {
                    Some((_, val)) => out.push_str(val),
                    None => return Err(format!("`%{t}` is not a token fleet expands in `{v}`")),
                },
                None => return Err(format!("`%` at the end of `{v}`")),
            },
            '$' if env && chars.peek() == Some(&'{') => {
                chars.next();
                let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
                match std::env::var(&name) {
                    Ok(val) => out.push_str(&val),
                    Err(_) => return Err(format!("environment variable `{name}` is not set")),
                }
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

/// The process's uid (`%i`), from the owner of `/proc/self`.
fn uid() -> String {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid().to_string())
        .unwrap_or_default()
}
