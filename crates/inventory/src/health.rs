//! `checks = { units = [...], tcp = [...], http = [...], commands = [...], timeout = SECS }`: a
//! host's health checks, on a host or in `[defaults]`. A host's keys win over `[defaults]`' key by
//! key (`units = []` on a host drops the default units).

use std::time::Duration;

use toml::de::DeValue;
use toml::Spanned;

use super::{entries, At, Checker};
use crate::types::HealthChecks;

/// Default `checks.timeout`, in seconds.
pub const DEFAULT_CHECK_TIMEOUT_SECS: u64 = 60;
/// Largest `checks.timeout`, in seconds (one hour).
const MAX_CHECK_TIMEOUT_SECS: u64 = 3600;

const CHECK_KEYS: &[&str] = &["units", "tcp", "http", "commands", "timeout"];

/// The `checks` table as written, each key optional.
#[derive(Debug, Clone, Default)]
pub(super) struct CheckSettings {
    units: Option<Vec<String>>,
    tcp: Option<Vec<String>>,
    http: Option<Vec<String>>,
    commands: Option<Vec<String>>,
    timeout: Option<u64>,
}

/// `[defaults]`' checks, overridden key by key by the host's; `None` when neither has one.
pub(super) fn merge(
    defaults: Option<&At<CheckSettings>>,
    own: Option<At<CheckSettings>>,
) -> Option<HealthChecks> {
    let d = defaults.map(|d| d.value.clone()).unwrap_or_default();
    let o = own.map(|o| o.value).unwrap_or_default();
    let checks = HealthChecks {
        units: o.units.or(d.units).unwrap_or_default(),
        tcp: o.tcp.or(d.tcp).unwrap_or_default(),
        http: o.http.or(d.http).unwrap_or_default(),
        commands: o.commands.or(d.commands).unwrap_or_default(),
        timeout: Duration::from_secs(
            o.timeout
                .or(d.timeout)
                .unwrap_or(DEFAULT_CHECK_TIMEOUT_SECS),
        ),
    };
    (!checks.is_empty()).then_some(checks)
}

/// Why `unit` is not a systemd unit name fleet can pass on, if it is not one.
fn unit_problem(unit: &str) -> Option<&'static str> {
    if unit.is_empty() {
        Some("a unit name cannot be empty")
    } else if unit.starts_with('-') {
        Some("a unit name cannot start with `-`")
    } else if !unit
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b))
    {
        Some("a unit name has only letters, digits and `:-_.\\@` (e.g. \"nginx.service\")")
    } else {
        None
    }
}

/// Splits `HOST:PORT` (`[v6]:PORT` too), or says what is wrong.
pub fn host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("`{s}` has no port: write HOST:PORT, e.g. \"127.0.0.1:22\""))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(format!("`{s}` does not start with a host name or address"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host.to_owned(), p)),
        _ => Err(format!("`{port}` is not a port (1 to 65535)")),
    }
}

/// Splits an `http://HOST[:PORT][/PATH]` URL into host, port and path, or says what is wrong.
pub fn http_url(url: &str) -> Result<(String, u16, String), String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(if url.starts_with("https://") {
            "https is not supported: the check talks plain HTTP through the SSH connection \
             (which is already encrypted); use http:// to a local port"
                .to_owned()
        } else {
            format!("`{url}` is not an http:// URL")
        });
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err("the path contains spaces or control characters".to_owned());
    }
    let (host, port) = if authority.ends_with(']') || !authority.contains(':') {
        (authority, 80)
    } else {
        let (h, p) = host_port(authority)?;
        return Ok((h, p, path.to_owned()));
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains('@') {
        return Err(format!(
            "`{url}` has no host (or has user info, not supported)"
        ));
    }
    Ok((host.to_owned(), port, path.to_owned()))
}

impl Checker<'_, '_> {
    /// A `checks` table.
    pub(super) fn checks(&mut self, value: &Spanned<DeValue>) -> Option<At<CheckSettings>> {
        let table = self.table("checks", value)?;
        let mut out = CheckSettings::default();
        let mut ok = true;
        for (key, value) in entries(table) {
            let name = key.get_ref().as_ref();
            let Some(&known) = CHECK_KEYS.iter().find(|k| **k == name) else {
                self.unknown_key(name, "checks", key.span(), CHECK_KEYS);
                ok = false;
                continue;
            };
            let key_name = format!("checks.{known}");
            if known == "timeout" {
                let Some(n) = self.integer(&key_name, value) else {
                    ok = false;
                    continue;
                };
                match n.value {
                    Ok(t) if (1..=MAX_CHECK_TIMEOUT_SECS as i64).contains(&t) => {
                        out.timeout = Some(t as u64)
                    }
                    _ => {
                        self.invalid(
                            &key_name,
                            format!("must be between 1 and {MAX_CHECK_TIMEOUT_SECS} seconds"),
                            n.span,
                        );
                        ok = false;
                    }
                }
                continue;
            }
            let Some(list) = self.string_list(&key_name, value) else {
                ok = false;
                continue;
            };
            for (s, span) in &list {
                let problem = match known {
                    "units" => unit_problem(s).map(str::to_owned),
                    "tcp" => host_port(s).err(),
                    "http" => http_url(s).err(),
                    _ => s
                        .trim()
                        .is_empty()
                        .then(|| "a command cannot be empty".to_owned()),
                };
                if let Some(reason) = problem {
                    self.invalid(&key_name, reason, span.clone());
                    ok = false;
                }
            }
            let list = Some(list.into_iter().map(|(s, _)| s).collect());
            match known {
                "units" => out.units = list,
                "tcp" => out.tcp = list,
                "http" => out.http = list,
                _ => out.commands = list,
            }
        }
        ok.then(|| At {
            value: out,
            span: value.span(),
        })
    }

    /// An array of strings, each with its span.
    fn string_list(
        &mut self,
        key: &str,
        value: &Spanned<DeValue>,
    ) -> Option<Vec<(String, std::ops::Range<usize>)>> {
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(key, "an array of strings", value.get_ref(), value.span());
            return None;
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push((s.to_string(), item.span())),
                other => {
                    self.wrong_type(key, "an array of strings", other, item.span());
                    return None;
                }
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_urls_split() {
        assert_eq!(host_port("127.0.0.1:22").unwrap(), ("127.0.0.1".into(), 22));
        assert_eq!(host_port("[::1]:8080").unwrap(), ("::1".into(), 8080));
        assert!(host_port("localhost").is_err());
        assert!(host_port("localhost:0").is_err());
        assert!(host_port(":80").is_err());
        assert_eq!(
            http_url("http://127.0.0.1:8080/health").unwrap(),
            ("127.0.0.1".into(), 8080, "/health".into())
        );
        assert_eq!(
            http_url("http://localhost").unwrap(),
            ("localhost".into(), 80, "/".into())
        );
        assert!(http_url("https://x/").unwrap_err().contains("https"));
        assert!(http_url("ftp://x/").is_err());
        assert!(unit_problem("nginx.service").is_none());
        assert!(unit_problem("getty@tty1.service").is_none());
        assert!(unit_problem("a b").is_some());
        assert!(unit_problem("--now").is_some());
    }
}
