//! `-v`/`--verbose`: the `tracing` events of fleet's crates (SSH steps, remote and Nix
//! commands, the activation helper) as lines on stderr. Off by default. The library crates only
//! emit `tracing` events; this is the one place that shows them. What they log never holds the
//! sudo password or a secret's content: those travel on a channel's stdin, which is not logged.

use std::io::Write;

use tracing::Level;

/// stderr that drops what cannot be written (a closed stderr is not an error, see `out.rs`).
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().lock().write_all(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// The level `-v` given `count` times asks for: none, debug, trace.
pub fn level(count: u8) -> Option<Level> {
    match count {
        0 => None,
        1 => Some(Level::DEBUG),
        _ => Some(Level::TRACE),
    }
}

/// Installs the stderr logger when `-v` was given.
pub fn init(verbose: u8) {
    let Some(level) = level(verbose) else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(|| Stderr)
        .with_ansi(false)
        .log_internal_errors(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_levels() {
        assert_eq!(level(0), None);
        assert_eq!(level(1), Some(Level::DEBUG));
        assert_eq!(level(3), Some(Level::TRACE));
    }
}
