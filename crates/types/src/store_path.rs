//! Store paths and the nix32 encoding.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The store directory fleet works with (Nix's default; chroot stores map it elsewhere on disk).
pub const STORE_DIR: &str = "/nix/store";

/// nix32 alphabet: no `e`, `o`, `t`, `u`.
const NIX32_CHARS: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Encode bytes in Nix's base-32 ("nix32").
pub fn nix32_encode(bytes: &[u8]) -> String {
    let len = (bytes.len() * 8).div_ceil(5);
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        let lo = bytes[i] as u32 >> j;
        let hi = if i + 1 < bytes.len() {
            (bytes[i + 1] as u32) << (8 - j)
        } else {
            0
        };
        out.push(NIX32_CHARS[((lo | hi) & 0x1f) as usize] as char);
    }
    out
}

/// Decode nix32 into `n` bytes; `None` if the text is not valid nix32 of that size.
pub fn nix32_decode(s: &str, n: usize) -> Option<Vec<u8>> {
    if s.len() != (n * 8).div_ceil(5) {
        return None;
    }
    let mut out = vec![0u8; n];
    for (k, c) in s.bytes().rev().enumerate() {
        let digit = NIX32_CHARS.iter().position(|&x| x == c)? as u32;
        let b = k * 5;
        let i = b / 8;
        let j = b % 8;
        out[i] |= (digit << j) as u8;
        let carry = digit >> (8 - j);
        if i + 1 < n {
            out[i + 1] |= carry as u8;
        } else if carry != 0 {
            return None;
        }
    }
    Some(out)
}

fn is_nix32_char(c: u8) -> bool {
    NIX32_CHARS.contains(&c)
}

/// Why a string is not a store path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StorePathError {
    #[error("does not start with /nix/store/")]
    NotInStore,
    #[error("hash part is not 32 nix32 characters followed by '-'")]
    BadHash,
    #[error("name is empty")]
    EmptyName,
    #[error("name is longer than 211 characters")]
    NameTooLong,
    #[error("name contains a character Nix does not allow")]
    BadNameChar,
    #[error("name is '.', '..' or starts with '.-' / '..-'")]
    DotName,
}

/// A string that is not a store path, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid store path {path:?}: {reason}")]
pub struct InvalidStorePath {
    pub path: String,
    pub reason: StorePathError,
}

/// A validated store path: `/nix/store/<32 nix32 chars>-<name>`.
///
/// Serialised as the plain string.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StorePath(String);

impl StorePath {
    /// Parse and validate a full store path.
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidStorePath> {
        let s = s.into();
        match Self::validate(&s) {
            Ok(()) => Ok(StorePath(s)),
            Err(reason) => Err(InvalidStorePath { path: s, reason }),
        }
    }

    fn validate(s: &str) -> Result<(), StorePathError> {
        let rest = s
            .strip_prefix(STORE_DIR)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or(StorePathError::NotInStore)?;
        let b = rest.as_bytes();
        if b.len() < 33 || b[32] != b'-' || !b[..32].iter().all(|&c| is_nix32_char(c)) {
            return Err(StorePathError::BadHash);
        }
        let name = &rest[33..];
        if name.is_empty() {
            return Err(StorePathError::EmptyName);
        }
        if name.len() > 211 {
            return Err(StorePathError::NameTooLong);
        }
        if !name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"+-._?=".contains(&c))
        {
            return Err(StorePathError::BadNameChar);
        }
        if name == "." || name == ".." || name.starts_with(".-") || name.starts_with("..-") {
            return Err(StorePathError::DotName);
        }
        Ok(())
    }

    /// The full path, e.g. `/nix/store/abc…-hello-2.12`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 32-character hash part.
    pub fn hash_part(&self) -> &str {
        &self.0[STORE_DIR.len() + 1..STORE_DIR.len() + 33]
    }

    /// The name after the hash, e.g. `hello-2.12`.
    pub fn name(&self) -> &str {
        &self.0[STORE_DIR.len() + 34..]
    }

    /// The base name `<hash>-<name>` (the entry in the store directory).
    pub fn base_name(&self) -> &str {
        &self.0[STORE_DIR.len() + 1..]
    }

    /// Split the name like Nix's `DrvName` (see [`crate::store_name::split_name_version`]):
    /// `("hello", "2.12")`; `("foo-bar", "")` when there is no version.
    pub fn name_version(&self) -> (&str, &str) {
        crate::store_name::split_name_version(self.name())
    }

    /// Shortened for humans (see [`crate::short_path`]).
    pub fn short(&self) -> String {
        crate::short_path(&self.0)
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({})", self.0)
    }
}

impl TryFrom<String> for StorePath {
    type Error = InvalidStorePath;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        StorePath::new(s)
    }
}

impl std::str::FromStr for StorePath {
    type Err = InvalidStorePath;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StorePath::new(s)
    }
}

impl From<StorePath> for String {
    fn from(p: StorePath) -> String {
        p.0
    }
}

impl AsRef<str> for StorePath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for StorePath {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for StorePath {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nix32_matches_nix() {
        // sha256("") in nix32, as printed by `nix-hash --type sha256 --to-base32`.
        let empty = [
            0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f,
            0xb9, 0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b,
            0x78, 0x52, 0xb8, 0x55,
        ];
        let s = nix32_encode(&empty);
        assert_eq!(s, "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73");
        assert_eq!(nix32_decode(&s, 32).unwrap(), empty);
        assert_eq!(nix32_encode(&[]), "");
        assert_eq!(nix32_encode(&[0xff]), "7z");
        assert!(nix32_decode("7z", 1).is_some());
        assert!(
            nix32_decode("zz", 1).is_none(),
            "overflowing high bits rejected"
        );
        assert!(nix32_decode("e0", 1).is_none(), "'e' is not nix32");
    }

    #[test]
    fn store_path_parts() {
        let p = StorePath::new("/nix/store/qpc3ingl0x25i91qhblg0iaxkbjwa8sh-probe-a-1.0").unwrap();
        assert_eq!(p.hash_part(), "qpc3ingl0x25i91qhblg0iaxkbjwa8sh");
        assert_eq!(p.name(), "probe-a-1.0");
        assert_eq!(
            p.base_name(),
            "qpc3ingl0x25i91qhblg0iaxkbjwa8sh-probe-a-1.0"
        );
        assert_eq!(p.name_version(), ("probe-a", "1.0"));
        assert_eq!(p.short(), "qpc3ing-probe-a-1.0");
        assert_eq!(p, "/nix/store/qpc3ingl0x25i91qhblg0iaxkbjwa8sh-probe-a-1.0");
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(
            json, "\"/nix/store/qpc3ingl0x25i91qhblg0iaxkbjwa8sh-probe-a-1.0\"",
            "serialised as the plain string"
        );
        assert_eq!(serde_json::from_str::<StorePath>(&json).unwrap(), p);
        assert!(serde_json::from_str::<StorePath>("\"/nix/store/x\"").is_err());
    }

    #[test]
    fn store_path_rejects_with_a_reason() {
        let h = "qpc3ingl0x25i91qhblg0iaxkbjwa8sh";
        for (bad, reason) in [
            (format!("/nix/store/{h}"), StorePathError::BadHash),
            (format!("/nix/store/{h}-"), StorePathError::EmptyName),
            (format!("/nix/store/{h}-a/b"), StorePathError::BadNameChar),
            (format!("/nix/store/{h}-a b"), StorePathError::BadNameChar),
            (format!("/nix/store/{h}-.."), StorePathError::DotName),
            (format!("/nix/store/{h}-.-x"), StorePathError::DotName),
            (
                format!("/nix/store/{}-x", &h.replace('q', "e")),
                StorePathError::BadHash,
            ),
            (format!("/nix/store/{}-x", &h[1..]), StorePathError::BadHash),
            (format!("/gnu/store/{h}-x"), StorePathError::NotInStore),
            (
                format!("/nix/store/{h}-{}", "a".repeat(212)),
                StorePathError::NameTooLong,
            ),
        ] {
            let err = StorePath::new(bad.clone()).unwrap_err();
            assert_eq!(err.reason, reason, "{bad}");
            assert_eq!(err.path, bad);
        }
        assert!(StorePath::new(format!("/nix/store/{h}-{}", "a".repeat(211))).is_ok());
        assert!(StorePath::new(format!("/nix/store/{h}-.config?=+_")).is_ok());
        assert_eq!(
            StorePath::new("/tmp/x").unwrap_err().to_string(),
            "invalid store path \"/tmp/x\": does not start with /nix/store/"
        );
    }
}
