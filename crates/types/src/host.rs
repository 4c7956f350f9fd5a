//! Host names, as fleet.toml's `[hosts.NAME]` gives them.

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A host name: a DNS label (`[a-zA-Z0-9-]`, 1 to 63 characters, no leading or trailing `-`).
///
/// Serialised as the plain string; deserialising checks it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostName(String);

impl HostName {
    /// Checks `name` against the DNS label rules.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidName> {
        let name = name.into();
        match host_name_problem(&name) {
            Some(reason) => Err(InvalidName { name, reason }),
            None => Ok(HostName(name)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why `name` is not a DNS label, if it is not one.
pub fn host_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("a host name cannot be empty")
    } else if name.len() > 63 {
        Some("a host name is at most 63 characters long")
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        Some("a host name may only contain letters, digits and `-`")
    } else if name.starts_with('-') || name.ends_with('-') {
        Some("a host name cannot start or end with `-`")
    } else {
        None
    }
}

/// A value that is not a valid [`HostName`] or [`crate::System`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name `{name}`: {reason}")]
pub struct InvalidName {
    pub name: String,
    pub reason: &'static str,
}

impl TryFrom<String> for HostName {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        HostName::new(s)
    }
}

impl std::str::FromStr for HostName {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostName::new(s)
    }
}

impl From<HostName> for String {
    fn from(n: HostName) -> String {
        n.0
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads as the `str` it is (`name.len()`, `&name` where a `&str` is wanted).
impl std::ops::Deref for HostName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for HostName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Maps keyed by host name can be read with a `&str`.
impl Borrow<str> for HostName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for HostName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for HostName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_dns_labels() {
        for good in ["pi1", "web-01", "A", &"x".repeat(63)] {
            assert_eq!(HostName::new(good).unwrap().as_str(), good);
        }
        for (bad, reason) in [
            ("", "cannot be empty"),
            ("web_01", "only contain"),
            ("a.b", "only contain"),
            ("-web", "start or end"),
            ("web-", "start or end"),
            (&"x".repeat(64), "at most 63"),
        ] {
            let err = HostName::new(bad).unwrap_err();
            assert!(err.reason.contains(reason), "{bad}: {}", err.reason);
            assert_eq!(err.name, bad);
        }
    }

    #[test]
    fn host_names_serialise_as_strings_and_are_checked_when_read() {
        let n = HostName::new("pi1").unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"pi1\"");
        assert_eq!(serde_json::from_str::<HostName>("\"pi1\"").unwrap(), n);
        assert!(serde_json::from_str::<HostName>("\"a b\"").is_err());
        let map = std::collections::BTreeMap::from([(n.clone(), 1)]);
        assert_eq!(map.get("pi1"), Some(&1));
        assert!(n == "pi1");
    }
}
