//! Names in store paths: `/nix/store/<hash>-<name>-<version>[-<output>]`. Lenient: these work
//! on any text (a path in another store directory, a bare base name), unlike [`crate::StorePath`].

/// The base name of a store path with its hash split off: `("<hash>", "<name>")`.
///
/// A name without a `-` is all hash (and an empty name).
pub fn split_hash(path: &str) -> (&str, &str) {
    let base = path.rsplit('/').next().unwrap_or(path);
    match base.split_once('-') {
        Some((hash, name)) => (hash, name),
        None => (base, ""),
    }
}

/// A store path shortened for humans: hash prefix of 7 characters, then the name.
///
/// `/nix/store/a1b2c3d4…-htop-3.3.0` → `a1b2c3d-htop-3.3.0`.
pub fn short_path(path: &str) -> String {
    let (hash, name) = split_hash(path);
    let prefix: String = hash.chars().take(7).collect();
    if name.is_empty() {
        prefix
    } else {
        format!("{prefix}-{name}")
    }
}

/// Nix's `DrvName` rule: the version starts after the first `-` that is followed by a character
/// that is not a letter (Nix: `!isalpha(s[i+1])`, so usually a digit).
/// `python3-3.11.9` → (`python3`, `3.11.9`), `hello` → (`hello`, ``).
pub fn split_name_version(name: &str) -> (&str, &str) {
    let bytes = name.as_bytes();
    for i in 0..bytes.len() {
        if bytes[i] == b'-' && i + 1 < bytes.len() && !bytes[i + 1].is_ascii_alphabetic() {
            return (&name[..i], &name[i + 1..]);
        }
    }
    (name, "")
}

/// A store path name parsed into package name, version and output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkgName<'a> {
    pub name: &'a str,
    pub version: &'a str,
    /// Output suffix such as `bin`, `man`, `lib`; empty for the default output.
    pub output: &'a str,
}

/// Parse a store path name. A trailing `-<letters>` (or `-lib32`/`-lib64`) is an output name,
/// but only when what is left still has a version: `xz-5.4.6-bin` is `xz` 5.4.6 output `bin`,
/// whereas `etc-hosts` stays the unversioned name `etc-hosts`.
pub fn parse_name(name: &str) -> PkgName<'_> {
    if let Some((rest, output)) = name.rsplit_once('-') {
        let is_output = !output.is_empty()
            && (output.bytes().all(|b| b.is_ascii_lowercase())
                || output == "lib32"
                || output == "lib64");
        if is_output {
            let (pname, version) = split_name_version(rest);
            if !version.is_empty() {
                return PkgName {
                    name: pname,
                    version,
                    output,
                };
            }
        }
    }
    let (pname, version) = split_name_version(name);
    PkgName {
        name: pname,
        version,
        output: "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str) -> (&str, &str, &str) {
        let n = parse_name(name);
        (n.name, n.version, n.output)
    }

    #[test]
    fn name_version_like_drvname() {
        for (name, want) in [
            ("hello-2.12", ("hello", "2.12")),
            ("hello-2.12.1", ("hello", "2.12.1")),
            ("nix-2.8.0", ("nix", "2.8.0")),
            ("python3-3.11.9", ("python3", "3.11.9")),
            ("linux-firmware-20231111", ("linux-firmware", "20231111")),
            (
                "python3.11-requests-2.31.0",
                ("python3.11-requests", "2.31.0"),
            ),
            (
                "nixos-system-pi1-24.05.20240101.abcdef",
                ("nixos-system-pi1", "24.05.20240101.abcdef"),
            ),
            ("unit-nginx.service", ("unit-nginx.service", "")),
            ("foo-unstable-2024-01-01", ("foo-unstable", "2024-01-01")),
            ("etc", ("etc", "")),
            ("hello", ("hello", "")),
            ("foo-bar", ("foo-bar", "")),
            ("unit-script-foo-start", ("unit-script-foo-start", "")),
            ("foo--bar", ("foo", "-bar")),
            ("foo-", ("foo-", "")),
            ("trailing-", ("trailing-", "")),
            ("source-_x", ("source", "_x")),
        ] {
            assert_eq!(split_name_version(name), want, "{name}");
        }
    }

    #[test]
    fn outputs_are_split_off_only_from_versioned_names() {
        assert_eq!(p("xz-5.4.6-bin"), ("xz", "5.4.6", "bin"));
        assert_eq!(p("xz-5.4.6"), ("xz", "5.4.6", ""));
        assert_eq!(p("nano-7.2-man"), ("nano", "7.2", "man"));
        assert_eq!(p("glibc-2.39-52-lib64"), ("glibc", "2.39-52", "lib64"));
        assert_eq!(p("etc-hosts"), ("etc-hosts", "", ""));
        assert_eq!(
            p("unit-script-nginx-pre-start"),
            ("unit-script-nginx-pre-start", "", "")
        );
        assert_eq!(p("python3-3.11.9"), ("python3", "3.11.9", ""));
    }

    #[test]
    fn short_paths() {
        assert_eq!(
            short_path("/nix/store/a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6-htop-3.3.0"),
            "a1b2c3d-htop-3.3.0"
        );
        assert_eq!(split_hash("/nix/store/abc-x-1"), ("abc", "x-1"));
        assert_eq!(short_path("abc"), "abc");
    }
}
