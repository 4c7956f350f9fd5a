//! Shape checks for single values: host keys, hashes, tags, "did you mean".

/// SSH host key types fleet can pin.
pub(crate) const HOST_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
];

/// Checks an OpenSSH public key line (`<type> <base64> [comment]`) and returns it without the
/// comment, or says what is wrong with it.
pub(crate) fn host_key(line: &str) -> Result<String, String> {
    let mut words = line.split_whitespace();
    let Some(kind) = words.next() else {
        return Err("the key is empty".to_owned());
    };
    if !HOST_KEY_TYPES.contains(&kind) {
        if words.next().is_some_and(|w| HOST_KEY_TYPES.contains(&w)) {
            return Err(format!(
                "`{kind}` looks like the host name of a known_hosts line; write just the key"
            ));
        }
        return Err(format!(
            "`{kind}` is not an SSH key type (expected one of {})",
            HOST_KEY_TYPES.join(", ")
        ));
    }
    let Some(blob) = words.next() else {
        return Err(format!("the key data after `{kind}` is missing"));
    };
    let Some(bytes) = base64_decode(blob) else {
        return Err("the key data is not valid base64".to_owned());
    };
    let embedded = bytes
        .get(..4)
        .map(|len| u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize)
        .and_then(|len| bytes.get(4..4usize.checked_add(len)?));
    if embedded != Some(kind.as_bytes()) {
        return Err(format!("the key data is not of type `{kind}`"));
    }
    if kind == "ssh-ed25519" && bytes.len() != 4 + 11 + 4 + 32 {
        return Err("the key data has the wrong length for an ed25519 key".to_owned());
    }
    Ok(format!("{kind} {blob}"))
}

/// Standard base64 with `=` padding; `None` if `s` is not that.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = s.as_bytes();
    if bytes.is_empty() || bytes.len() % 4 != 0 {
        return None;
    }
    let body = s.trim_end_matches('=');
    if bytes.len() - body.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in body.as_bytes() {
        acc = (acc << 6) | value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Whether `s` is a SHA-256 in a form `fetchTarball` accepts: Nix base32 (52 characters),
/// hex (64), or SRI (`sha256-` + base64), optionally prefixed `sha256:`.
pub(crate) fn sha256(s: &str) -> bool {
    const NIX32: &str = "0123456789abcdfghijklmnpqrsvwxyz";
    if let Some(sri) = s.strip_prefix("sha256-") {
        return base64_decode(sri).is_some_and(|b| b.len() == 32);
    }
    let s = s.strip_prefix("sha256:").unwrap_or(s);
    (s.len() == 52 && s.chars().all(|c| NIX32.contains(c)))
        || (s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Why a tag is unusable in `--on @tag`, if it is.
pub(crate) fn tag_problem(tag: &str) -> Option<&'static str> {
    if tag.is_empty() {
        Some("a tag cannot be empty")
    } else if !tag
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Some("a tag may only contain letters, digits, `-` and `_`")
    } else {
        None
    }
}

/// Why a pin name is unusable, if it is (pin names end up in generated Nix code).
pub(crate) fn pin_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("a pin name cannot be empty")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        || name.starts_with('-')
        || name.as_bytes()[0].is_ascii_digit()
    {
        Some("a pin name is letters, digits, `-` and `_`, starting with a letter or `_`")
    } else {
        None
    }
}

/// The candidate closest to `word`, if one is close enough to be a likely typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_ascii_lowercase().replace('_', "-");
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    #[test]
    fn host_keys() {
        assert_eq!(host_key(&format!("{ED25519} root@pi1")).unwrap(), ED25519);
        assert!(host_key("ssh-ed25519").is_err());
        assert!(host_key("ssh-ed25519 AAAA").is_err());
        assert!(host_key("ssh-ed25519 not*base64").is_err());
        assert!(host_key(&format!("pi1 {ED25519}"))
            .unwrap_err()
            .contains("known_hosts"));
        assert!(host_key("ssh-dss AAAAB3NzaC1kc3M=").is_err());
        // An RSA blob labelled as ed25519.
        assert!(host_key("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ==").is_err());
    }

    #[test]
    fn hashes() {
        assert!(sha256(
            "0c5m4xbmsjsgwiy4xwlm3ngqchfhpnw8iarvjbgk3qmd1lgb4vvz"
        ));
        assert!(sha256(&"a".repeat(64)));
        assert!(sha256(
            "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        ));
        assert!(!sha256("abc"));
        assert!(!sha256(&"e".repeat(52)));
    }

    #[test]
    fn suggestions() {
        assert_eq!(closest("sytem", ["system", "user"]), Some("system"));
        assert_eq!(closest("host_key", ["host-key", "user"]), Some("host-key"));
        assert_eq!(closest("zzz", ["system", "user"]), None);
    }
}
