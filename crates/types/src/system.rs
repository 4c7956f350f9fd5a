//! Nix system doubles of the hosts fleet deploys to.

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::InvalidName;

/// The Nix system doubles of Linux hosts (nixpkgs `lib.systems.doubles.linux`).
pub const LINUX_SYSTEMS: &[&str] = &[
    "aarch64-linux",
    "armv5tel-linux",
    "armv6l-linux",
    "armv7a-linux",
    "armv7l-linux",
    "i686-linux",
    "loongarch64-linux",
    "m68k-linux",
    "microblaze-linux",
    "microblazeel-linux",
    "mips-linux",
    "mips64-linux",
    "mips64el-linux",
    "mipsel-linux",
    "powerpc-linux",
    "powerpc64-linux",
    "powerpc64le-linux",
    "riscv32-linux",
    "riscv64-linux",
    "s390-linux",
    "s390x-linux",
    "x86_64-linux",
];

/// A Nix system double of a Linux host, e.g. `aarch64-linux`.
///
/// Serialised as the plain string; deserialising checks it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct System(String);

impl System {
    /// Checks `system` against [`LINUX_SYSTEMS`].
    pub fn new(system: impl Into<String>) -> Result<Self, InvalidName> {
        let system = system.into();
        if LINUX_SYSTEMS.contains(&system.as_str()) {
            Ok(System(system))
        } else {
            Err(InvalidName {
                name: system,
                reason: "not a Nix system double of Linux",
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for System {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        System::new(s)
    }
}

impl std::str::FromStr for System {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        System::new(s)
    }
}

impl From<System> for String {
    fn from(s: System) -> String {
        s.0
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads as the `str` it is (`name.len()`, `&name` where a `&str` is wanted).
impl std::ops::Deref for System {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for System {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for System {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for System {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for System {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systems_are_linux_doubles() {
        let s: System = "aarch64-linux".parse().unwrap();
        assert_eq!(s, "aarch64-linux");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"aarch64-linux\"");
        for bad in ["aarch64-darwin", "x86_64", "", "arm64-linux"] {
            let err = System::new(bad).unwrap_err();
            assert_eq!(err.name, bad);
        }
        assert!(serde_json::from_str::<System>("\"x86_64-darwin\"").is_err());
    }
}
