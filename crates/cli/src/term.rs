//! The terminal: asking for secrets without echo, and whether output goes to a terminal.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::io::AsRawFd;

use zeroize::Zeroizing;

/// Whether stderr is a terminal (live progress lines) and stdout is one (colours).
pub fn stderr_is_tty() -> bool {
    std::io::stderr().is_terminal()
}

/// Colours on stdout: a terminal, and `NO_COLOR` unset (https://no-color.org).
pub fn stdout_color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Restores the terminal's echo when dropped (also on a panic or an early return).
struct EchoOff {
    fd: i32,
    saved: libc::termios,
}

impl EchoOff {
    fn new(tty: &File) -> std::io::Result<Self> {
        let fd = tty.as_raw_fd();
        // SAFETY: tcgetattr/tcsetattr on a descriptor we own, with a zeroed termios to fill.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut saved) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            quiet.c_lflag |= libc::ECHONL;
            if libc::tcsetattr(fd, libc::TCSANOW, &quiet) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(EchoOff { fd, saved })
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `new` on the same descriptor.
        unsafe {
            libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved);
        }
    }
}

/// Asks `prompt` on the controlling terminal (`/dev/tty`, so it works with stdout and stderr
/// redirected) and reads one line without echo. `Ok(None)`: there is no terminal.
pub fn read_secret(prompt: &str) -> std::io::Result<Option<Zeroizing<String>>> {
    let tty = match OpenOptions::new().read(true).write(true).open("/dev/tty") {
        Ok(t) => t,
        Err(_) => return Ok(None),
    };
    let mut out = tty.try_clone()?;
    write!(out, "{prompt}")?;
    out.flush()?;
    let line = {
        let _echo = EchoOff::new(&tty)?;
        let mut line = Zeroizing::new(String::new());
        BufReader::new(&tty).read_line(&mut line)?;
        line
    };
    let trimmed = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned());
    Ok(Some(trimmed))
}
