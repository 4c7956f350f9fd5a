//! A small, strict reader for the part of `~/.ssh/config` fleet honours.
//!
//! Understood: `Host` blocks (patterns with `*` and `?`, `!negation`, several patterns per
//! line), `HostName` (with `%h` and `%%`), `User`, `Port`, `IdentityFile` (repeatable; `~`,
//! `%d`, `%u`, `%r`, `%h`, `%%`), `ProxyJump` (`none` disables), both `Keyword value` and
//! `Keyword=value` syntax, tabs, double quotes, comments. As in OpenSSH the first value found
//! wins and `IdentityFile`s accumulate.
//!
//! Not understood: `Match` blocks are *skipped entirely* (their contents never apply) and
//! `Include` is ignored; both produce a [`SshConfig::warnings`] entry so the CLI can say so.
//! Every other keyword is ignored silently. A malformed value of a keyword we use (a bad
//! `Port`, a `Host` with no pattern, an unterminated quote) is an error with its line.

use std::path::{Path, PathBuf};

/// A parse error in an ssh_config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct SshConfigError {
    /// The file (or `<text>`).
    pub path: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    negated: bool,
    glob: String,
}

#[derive(Debug, Clone, Default)]
struct Block {
    /// `None` for the global section before the first `Host`.
    patterns: Option<Vec<Pattern>>,
    /// (keyword lower-cased, value, line)
    entries: Vec<(String, String, usize)>,
}

/// A parsed ssh_config file.
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    blocks: Vec<Block>,
    /// Things in the file fleet does not act on (`Match`, `Include`), with line numbers.
    pub warnings: Vec<String>,
}

/// What the config says about one host alias. `None`/empty: nothing set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSettings {
    pub host_name: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_files: Vec<PathBuf>,
    /// `ProxyJump` exactly as written (comma-separated `[user@]host[:port]`), `None` also for
    /// `ProxyJump none`.
    pub proxy_jump: Option<String>,
}

impl SshConfig {
    /// Reads a file. A missing file is an empty config.
    pub fn load(path: &Path) -> Result<Self, SshConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(SshConfigError {
                path: path.display().to_string(),
                line: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }

    /// Parses config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, SshConfigError> {
        let mut cfg = SshConfig {
            blocks: vec![Block::default()],
            warnings: Vec::new(),
        };
        let mut in_match = false;
        for (idx, raw) in text.lines().enumerate() {
            let line_no = idx + 1;
            let err = |message: String| SshConfigError {
                path: origin.to_owned(),
                line: line_no,
                message,
            };
            let Some((keyword, rest)) = split_keyword(raw) else {
                continue;
            };
            let args = split_args(rest).map_err(err)?;
            let kw = keyword.to_ascii_lowercase();
            match kw.as_str() {
                "host" => {
                    in_match = false;
                    if args.is_empty() {
                        return Err(err("`Host` needs at least one pattern".into()));
                    }
                    let patterns = args
                        .into_iter()
                        .map(|a| match a.strip_prefix('!') {
                            Some(g) => Pattern {
                                negated: true,
                                glob: g.to_owned(),
                            },
                            None => Pattern {
                                negated: false,
                                glob: a,
                            },
                        })
                        .collect();
                    cfg.blocks.push(Block {
                        patterns: Some(patterns),
                        entries: Vec::new(),
                    });
                }
                "match" => {
                    in_match = true;
                    cfg.warnings.push(format!(
                        "{origin}:{line_no}: `Match` blocks are not supported; this block is ignored"
                    ));
                }
                "include" => cfg.warnings.push(format!(
                    "{origin}:{line_no}: `Include` is not supported; ignored"
                )),
                _ if in_match => {}
                "hostname" | "user" | "identityfile" | "proxyjump" => {
                    let [v] = <[String; 1]>::try_from(args).map_err(|a| {
                        err(format!("`{keyword}` takes one value, got {}", a.len()))
                    })?;
                    push_entry(&mut cfg, kw, v, line_no);
                }
                "port" => {
                    let [v] = <[String; 1]>::try_from(args).map_err(|a| {
                        err(format!("`{keyword}` takes one value, got {}", a.len()))
                    })?;
                    match v.parse::<u16>() {
                        Ok(p) if p > 0 => push_entry(&mut cfg, kw, v, line_no),
                        _ => return Err(err(format!("invalid port `{v}`"))),
                    }
                }
                _ => {}
            }
        }
        Ok(cfg)
    }

    /// The settings for `host` (the name fleet was given, before `HostName`).
    /// `local_user` and `home` feed `%u` / `%d` / `~` in `IdentityFile`.
    pub fn host(&self, host: &str, local_user: &str, home: &Path) -> HostSettings {
        let mut s = HostSettings::default();
        let mut proxy_seen = false;
        let mut identity_raw = Vec::new();
        for block in &self.blocks {
            if let Some(p) = &block.patterns {
                if !host_matches(p, host) {
                    continue;
                }
            }
            for (kw, v, _) in &block.entries {
                match kw.as_str() {
                    "hostname" if s.host_name.is_none() => {
                        s.host_name = Some(expand_tokens(v, host, None, local_user, home));
                    }
                    "user" if s.user.is_none() => s.user = Some(v.clone()),
                    "port" if s.port.is_none() => s.port = v.parse().ok(),
                    "proxyjump" if !proxy_seen => {
                        proxy_seen = true;
                        if !v.eq_ignore_ascii_case("none") {
                            s.proxy_jump = Some(v.clone());
                        }
                    }
                    "identityfile" => identity_raw.push(v.clone()),
                    _ => {}
                }
            }
        }
        let remote_user = s.user.clone();
        for raw in identity_raw {
            if raw.eq_ignore_ascii_case("none") {
                continue;
            }
            let expanded = expand_tokens(&raw, host, remote_user.as_deref(), local_user, home);
            let path = if let Some(rest) = expanded.strip_prefix("~/") {
                home.join(rest)
            } else if expanded == "~" {
                home.to_path_buf()
            } else if Path::new(&expanded).is_relative() {
                home.join(".ssh").join(expanded)
            } else {
                PathBuf::from(expanded)
            };
            if !s.identity_files.contains(&path) {
                s.identity_files.push(path);
            }
        }
        s
    }
}

fn push_entry(cfg: &mut SshConfig, kw: String, v: String, line: usize) {
    cfg.blocks
        .last_mut()
        .expect("there is always a block")
        .entries
        .push((kw, v, line));
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

/// Splits arguments on spaces/tabs, honouring double quotes.
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

fn host_matches(patterns: &[Pattern], host: &str) -> bool {
    let mut positive = false;
    for p in patterns {
        if glob_match(p.glob.as_bytes(), host.as_bytes()) {
            if p.negated {
                return false;
            }
            positive = true;
        }
    }
    positive
}

/// `*` any run, `?` one character; ASCII case-insensitive like OpenSSH host matching.
pub(crate) fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p].eq_ignore_ascii_case(&s[i])) {
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

fn expand_tokens(
    v: &str,
    host: &str,
    remote_user: Option<&str>,
    local_user: &str,
    home: &Path,
) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('h') => out.push_str(host),
            Some('u') => out.push_str(local_user),
            Some('r') => out.push_str(remote_user.unwrap_or(local_user)),
            Some('d') => out.push_str(&home.display().to_string()),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// One hop of a `ProxyJump` list: `[user@]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpHost {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

/// Parses a `ProxyJump` value into hops (first hop first). `ssh://` URIs are accepted too.
pub fn parse_proxy_jump(v: &str) -> Result<Vec<JumpHost>, String> {
    v.split(',')
        .map(|hop| {
            let hop = hop.trim();
            let hop = hop.strip_prefix("ssh://").unwrap_or(hop);
            if hop.is_empty() {
                return Err(format!("empty hop in ProxyJump `{v}`"));
            }
            let (user, hostport) = match hop.rsplit_once('@') {
                Some((u, h)) => (Some(u.to_owned()), h),
                None => (None, hop),
            };
            let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
                let (h, after) = r
                    .split_once(']')
                    .ok_or_else(|| format!("bad ProxyJump hop `{hop}`"))?;
                let port = match after.strip_prefix(':') {
                    Some(p) => Some(p.parse().map_err(|_| format!("bad port in `{hop}`"))?),
                    None => None,
                };
                (h.to_owned(), port)
            } else {
                match hostport.split_once(':') {
                    Some((h, p)) => (
                        h.to_owned(),
                        Some(p.parse().map_err(|_| format!("bad port in `{hop}`"))?),
                    ),
                    None => (hostport.to_owned(), None),
                }
            };
            if host.is_empty() {
                return Err(format!("bad ProxyJump hop `{hop}`"));
            }
            Ok(JumpHost { user, host, port })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# global first
User\tglobaluser

Host web-* !web-excluded
    HostName %h.example.org
    Port=2222
\tIdentityFile ~/.ssh/web_key
    IdentityFile \"/keys/with space\"

Host eqsyntax
  HostName = 10.0.0.1
  ProxyJump admin@bastion:2200,other

Match host eqsyntax
  User matchuser
  Port 1

Host db?
  HostName\t10.9.9.9
  ProxyJump none

Host *
  Port 22
  IdentityFile id_%r_%u
";

    fn cfg() -> SshConfig {
        SshConfig::parse(TEXT, "cfg").unwrap()
    }

    #[test]
    fn patterns_tabs_equals_and_first_wins() {
        let home = Path::new("/home/me");
        let web = cfg().host("web-1", "me", home);
        assert_eq!(web.host_name.as_deref(), Some("web-1.example.org"));
        assert_eq!(web.port, Some(2222));
        assert_eq!(web.user.as_deref(), Some("globaluser"));
        assert_eq!(
            web.identity_files,
            vec![
                PathBuf::from("/home/me/.ssh/web_key"),
                PathBuf::from("/keys/with space"),
                PathBuf::from("/home/me/.ssh/id_globaluser_me"),
            ]
        );
        let excluded = cfg().host("web-excluded", "me", home);
        assert_eq!(excluded.host_name, None);
        assert_eq!(excluded.port, Some(22));

        let eq = cfg().host("eqsyntax", "me", home);
        assert_eq!(eq.host_name.as_deref(), Some("10.0.0.1"));
        assert_eq!(
            eq.user.as_deref(),
            Some("globaluser"),
            "Match block must not leak"
        );
        assert_eq!(eq.port, Some(22));
        assert_eq!(eq.proxy_jump.as_deref(), Some("admin@bastion:2200,other"));

        let db = cfg().host("db1", "me", home);
        assert_eq!(db.host_name.as_deref(), Some("10.9.9.9"));
        assert_eq!(db.proxy_jump, None);
        assert_eq!(cfg().host("db12", "me", home).host_name, None);
        assert_eq!(cfg().warnings.len(), 1);
    }

    #[test]
    fn errors_have_lines() {
        let e = SshConfig::parse("Host a\n  Port banana\n", "f").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(SshConfig::parse("Host\n", "f").is_err());
        assert!(SshConfig::parse("IdentityFile \"open\n", "f").is_err());
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"*", b"anything"));
        assert!(glob_match(b"a*b*c", b"aXXbYYc"));
        assert!(!glob_match(b"a*b*c", b"aXXbYY"));
        assert!(glob_match(b"h?st", b"HOST"));
        assert!(!glob_match(b"h?st", b"hoost"));
    }

    #[test]
    fn proxy_jump_hops() {
        assert_eq!(
            parse_proxy_jump("admin@bastion:2200,[::1]:22,plain").unwrap(),
            vec![
                JumpHost {
                    user: Some("admin".into()),
                    host: "bastion".into(),
                    port: Some(2200)
                },
                JumpHost {
                    user: None,
                    host: "::1".into(),
                    port: Some(22)
                },
                JumpHost {
                    user: None,
                    host: "plain".into(),
                    port: None
                },
            ]
        );
        assert!(parse_proxy_jump("a,,b").is_err());
    }
}
