//! Writing to stdout and stderr without ever panicking. `println!`/`eprintln!` panic when the
//! stream is closed (`fleet apply 2>&1 | tee log` after `tee` died, `fleet hosts | head`); fleet
//! uses these macros instead, which drop what cannot be written. A closed stdout is a normal
//! way for a reader to say it has seen enough.

use std::io::Write;

/// Writes `args` to stderr; a closed or failing stderr is ignored.
pub fn err(args: std::fmt::Arguments<'_>) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_fmt(args);
    let _ = e.flush();
}

/// Writes `args` to stdout; a closed or failing stdout is ignored.
pub fn out(args: std::fmt::Arguments<'_>) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_fmt(args);
    let _ = o.flush();
}

/// `text` without ANSI escape sequences (CSI `ESC [ … letter` and OSC `ESC ] … BEL/ST`): Nix
/// colours its errors and build logs even when fleet's output is a file.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// `eprintln!` that never panics.
macro_rules! errln {
    ($($arg:tt)*) => { $crate::out::err(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `eprint!` that never panics.
macro_rules! errp {
    ($($arg:tt)*) => { $crate::out::err(format_args!($($arg)*)) };
}

/// `println!` that never panics.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::out::out(format_args!("{}\n", format_args!($($arg)*))) };
}

#[cfg(test)]
mod tests {
    use super::strip_ansi;

    #[test]
    fn ansi_escapes_are_stripped() {
        assert_eq!(
            strip_ansi("\x1b[31;1merror:\x1b[0m builder for '\x1b[35;1m/nix/store/x.drv\x1b[0m'"),
            "error: builder for '/nix/store/x.drv'"
        );
        assert_eq!(
            strip_ansi("\x1b]8;;http://x\x07link\x1b]8;;\x1b\\ done"),
            "link done"
        );
        assert_eq!(strip_ansi("plain → text"), "plain → text");
    }
}
