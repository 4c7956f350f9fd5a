//! POSIX shell quoting for everything fleet puts into a remote command line.
//!
//! SSH `exec` sends one *string* that the remote login shell parses, so every argument that
//! fleet interpolates (store paths, profile names, user-supplied commands as data) goes through
//! [`quote`]. Single quotes are the only POSIX quoting with no special characters inside;
//! an embedded `'` is written as `'\''` (close, escaped quote, reopen).

/// Quotes one argument for a POSIX shell (`sh`, `bash`, `dash`, `zsh` in sh mode).
///
/// Strings made only of characters that are never special (`A-Za-z0-9` and `_-./:=@+,%`) are
/// returned unchanged so command lines stay readable; everything else is single-quoted.
/// The empty string becomes `''`.
pub fn quote(arg: &str) -> String {
    if !arg.is_empty() && arg.bytes().all(is_plain) {
        return arg.to_owned();
    }
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('\'');
    for c in arg.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Quotes every argument and joins them with single spaces: a command line whose words are
/// exactly `args` once the remote shell has parsed it.
pub fn command_line<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = String::new();
    for (i, a) in args.into_iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&quote(a.as_ref()));
    }
    out
}

fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_-./:=@+,%".contains(&b)
}

/// Test helper: `script` parses as POSIX sh (`sh -n`), with sh's complaint as the failure.
#[cfg(test)]
pub(crate) fn assert_posix_sh(script: &str) {
    let out = std::process::Command::new("sh")
        .args(["-n", "-c", script])
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Runs `printf '%s\0' <quoted>` through the real `sh` and returns the words it saw.
    fn words_seen_by_sh(line: &str) -> Vec<String> {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s\\0' {line}"))
            .output()
            .expect("sh runs");
        assert!(out.status.success(), "sh failed for {line:?}");
        let s = String::from_utf8(out.stdout).unwrap();
        s.split_terminator('\0').map(str::to_owned).collect()
    }

    const NASTY: &[&str] = &[
        "",
        "plain",
        "with space",
        "tab\there",
        "new\nline",
        "single'quote",
        "''",
        "double\"quote",
        "$HOME",
        "$(id)",
        "`id`",
        "a;b&&c||d|e",
        "*?[a-z]",
        "~root",
        "back\\slash",
        "-n",
        "!bang",
        "#comment",
        "{a,b}",
        "ünïcödé ✓",
        "x=1",
        "/nix/store/abc-foo-1.0",
        "trailing\\",
        "'",
        "\\'",
    ];

    #[test]
    fn round_trips_through_real_sh() {
        for s in NASTY {
            assert_eq!(words_seen_by_sh(&quote(s)), vec![s.to_string()], "{s:?}");
        }
    }

    #[test]
    fn command_line_keeps_word_boundaries() {
        let line = command_line(NASTY);
        assert_eq!(
            words_seen_by_sh(&line),
            NASTY.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn plain_words_stay_readable() {
        assert_eq!(quote("/nix/store/abc-foo"), "/nix/store/abc-foo");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
    }
}
