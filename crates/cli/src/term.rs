//! The terminal: asking for secrets without echo and for confirmation (both end fleet with
//! 130 on Ctrl-C), and whether output goes to a terminal.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::sync::{Arc, Mutex};

use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions, Termios};

use zeroize::Zeroizing;

/// Whether stderr is a terminal (live progress lines) and stdout is one (colours).
pub fn stderr_is_tty() -> bool {
    std::io::stderr().is_terminal()
}

/// Colours on stdout: as `--color` says; for `auto`, a terminal and `NO_COLOR` unset
/// (https://no-color.org).
pub fn stdout_color(when: crate::args::ColorWhen) -> bool {
    use crate::args::ColorWhen;
    match when {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => {
            std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    }
}

/// The prompt waiting for a line, if any: its terminal and the settings to restore. The
/// Ctrl-C handler ([`interrupt_prompt`]) restores them and exits, since a blocking read of the
/// terminal does not return on SIGINT once tokio handles the signal. (This is why fleet does
/// not use `rpassword`: its read cannot be interrupted with the terminal restored.)
static PROMPT: Mutex<Option<Prompting>> = Mutex::new(None);

#[derive(Clone)]
struct Prompting {
    tty: Arc<File>,
    /// The settings before echo was turned off; `None` when echo was left on.
    saved: Option<Termios>,
}

fn restore(p: &Prompting) {
    if let Some(saved) = &p.saved {
        let _ = tcsetattr(&*p.tty, OptionalActions::Now, saved);
    }
}

/// Called on Ctrl-C: when a prompt is waiting, restores the terminal (echo back on) and returns
/// true: the caller exits. False when no prompt is waiting.
pub fn interrupt_prompt() -> bool {
    let guard = PROMPT.lock().unwrap_or_else(|e| e.into_inner());
    match &*guard {
        Some(p) => {
            restore(p);
            true
        }
        None => false,
    }
}

/// A prompt in progress, registered for [`interrupt_prompt`]; restores the terminal when
/// dropped (also on a panic or an early return).
struct PromptGuard {
    state: Prompting,
}

impl PromptGuard {
    fn new(tty: &File, echo: bool) -> std::io::Result<Self> {
        let tty = Arc::new(tty.try_clone()?);
        let saved = if echo {
            None
        } else {
            let saved = tcgetattr(&*tty)?;
            let mut quiet = saved.clone();
            quiet.local_modes.remove(LocalModes::ECHO);
            quiet.local_modes.insert(LocalModes::ECHONL);
            tcsetattr(&*tty, OptionalActions::Now, &quiet)?;
            Some(saved)
        };
        let state = Prompting { tty, saved };
        *PROMPT.lock().unwrap_or_else(|e| e.into_inner()) = Some(state.clone());
        Ok(PromptGuard { state })
    }
}

impl Drop for PromptGuard {
    fn drop(&mut self) {
        *PROMPT.lock().unwrap_or_else(|e| e.into_inner()) = None;
        restore(&self.state);
    }
}

/// Asks `prompt` on the controlling terminal (`/dev/tty`, so it works with stdout and stderr
/// redirected) and reads one line without echo. `Ok(None)`: there is no terminal. Ctrl-C
/// while it waits exits fleet with 130 (see [`interrupt_prompt`]).
pub fn read_secret(prompt: &str) -> std::io::Result<Option<Zeroizing<String>>> {
    let line = match ask(prompt, false)? {
        Some(l) => l,
        None => return Ok(None),
    };
    let trimmed = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned());
    Ok(Some(trimmed))
}

/// Asks a yes/no question on the controlling terminal; only `y`/`yes` is yes. `None`: there
/// is no terminal. Ctrl-C exits with 130.
pub fn confirm(question: &str) -> std::io::Result<Option<bool>> {
    let line = ask(&format!("{question} [y/N] "), true)?;
    Ok(line.map(|l| matches!(l.trim().to_ascii_lowercase().as_str(), "y" | "yes")))
}

/// [`read_secret`] on the blocking pool, so the runtime's workers (and the Ctrl-C handler) run
/// while the prompt waits.
pub async fn read_secret_async(prompt: String) -> std::io::Result<Option<Zeroizing<String>>> {
    tokio::task::spawn_blocking(move || read_secret(&prompt))
        .await
        .map_err(std::io::Error::other)?
}

/// [`confirm`] on the blocking pool; true only for a yes (no terminal, or an error, is a no).
pub async fn confirm_async(question: String) -> bool {
    tokio::task::spawn_blocking(move || confirm(&question))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten()
        == Some(true)
}

/// Whether stdin is a terminal: a person can answer a question.
pub fn stdin_is_tty() -> bool {
    std::io::stdin().is_terminal()
}

fn ask(prompt: &str, echo: bool) -> std::io::Result<Option<Zeroizing<String>>> {
    let tty = match OpenOptions::new().read(true).write(true).open("/dev/tty") {
        Ok(t) => t,
        Err(_) => return Ok(None),
    };
    let mut out = tty.try_clone()?;
    write!(out, "{prompt}")?;
    out.flush()?;
    let _prompt = PromptGuard::new(&tty, echo)?;
    let mut line = Zeroizing::new(String::new());
    BufReader::new(&tty).read_line(&mut line)?;
    Ok(Some(line))
}
