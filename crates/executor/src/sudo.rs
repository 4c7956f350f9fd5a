//! Privilege escalation on the remote side: none, `sudo -n`, or `sudo -S` fed a password that
//! is asked at most once per run.
//!
//! The password lives in a [`SudoPassword`] (zeroized on drop, `Debug` prints `<redacted>`, not
//! `Serialize`). It is obtained through a [`SudoPasswordSource`] shared by every host of a run:
//! the first host whose sudo actually prompts asks the source, the others wait for the same
//! answer (a `tokio::sync::OnceCell`). A CLI that prompts on a TTY may call
//! [`SudoPasswordSource::get`] itself before the fan-out starts to keep the prompt away from
//! progress output; either way the source is asked once.
//!
//! The password travels only through the SSH channel's stdin, after sudo printed our prompt
//! marker on stderr (see [`crate::ssh`] for the handshake). It is never put in argv or env.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::OnceCell;
use zeroize::{Zeroize, Zeroizing};

use crate::quote::quote;

/// The prompt sudo prints (`-p`), which fleet watches for on stderr.
pub(crate) const SUDO_PROMPT: &str = "FLEET-SUDO:";
/// Printed on stderr by the wrapper shell once sudo let it run: the payload starts after it.
pub(crate) const SUDO_OK: &str = "FLEET-OK\n";

/// A sudo password held in memory only. Zeroized on drop; never printed.
#[derive(Clone)]
pub struct SudoPassword(Zeroizing<String>);

impl SudoPassword {
    /// Wraps a password. A trailing `\n` or `\r\n` (as read from a terminal or a command) is
    /// removed.
    pub fn new(mut password: String) -> Self {
        while password.ends_with('\n') || password.ends_with('\r') {
            password.pop();
        }
        SudoPassword(Zeroizing::new(password))
    }

    /// The password followed by `\n`, as sudo reads it from stdin. Zeroized on drop.
    pub(crate) fn line(&self) -> Zeroizing<Vec<u8>> {
        let mut v = Vec::with_capacity(self.0.len() + 1);
        v.extend_from_slice(self.0.as_bytes());
        v.push(b'\n');
        Zeroizing::new(v)
    }

    /// Whether the password is empty (sudo would reject it; the CLI may refuse up front).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SudoPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why no sudo password could be obtained.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SudoSourceError {
    /// The prompt was cancelled or failed (no TTY, Ctrl-C, ...).
    #[error("no sudo password: {0}")]
    Prompt(String),
    /// `--sudo-password-command` failed.
    #[error("sudo password command `{command}` failed: {message}")]
    Command { command: String, message: String },
}

/// A boxed future returning a password, for prompt callbacks.
pub type PasswordFuture =
    Pin<Box<dyn Future<Output = Result<SudoPassword, SudoSourceError>> + Send>>;

enum Asker {
    Prompt(Box<dyn Fn() -> PasswordFuture + Send + Sync>),
    Command(String),
    Fixed(SudoPassword),
}

/// Where the sudo password comes from, asked at most once per run.
pub struct SudoPasswordSource {
    asker: Asker,
    cell: OnceCell<Result<Arc<SudoPassword>, SudoSourceError>>,
    asked: AtomicUsize,
}

impl fmt::Debug for SudoPasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.asker {
            Asker::Prompt(_) => "prompt".to_string(),
            Asker::Command(c) => format!("command {c:?}"),
            Asker::Fixed(_) => "fixed".to_string(),
        };
        f.debug_struct("SudoPasswordSource")
            .field("kind", &kind)
            .field("asked", &self.times_asked())
            .finish()
    }
}

impl SudoPasswordSource {
    /// A callback (typically a TTY prompt in the CLI), called at most once.
    pub fn prompt<F>(f: F) -> Self
    where
        F: Fn() -> PasswordFuture + Send + Sync + 'static,
    {
        Self::with(Asker::Prompt(Box::new(f)))
    }

    /// A local shell command (`sh -c`) whose first stdout line is the password (for CI).
    /// Run at most once.
    pub fn command(command: impl Into<String>) -> Self {
        Self::with(Asker::Command(command.into()))
    }

    /// A password already known.
    pub fn fixed(password: SudoPassword) -> Self {
        Self::with(Asker::Fixed(password))
    }

    fn with(asker: Asker) -> Self {
        SudoPasswordSource {
            asker,
            cell: OnceCell::new(),
            asked: AtomicUsize::new(0),
        }
    }

    /// How many times the underlying prompt/command was invoked (0 or 1).
    pub fn times_asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }

    /// The password, asking the source the first time only. Concurrent callers wait for the
    /// one ask in flight. A failure is remembered too (no re-prompt loop).
    pub async fn get(&self) -> Result<Arc<SudoPassword>, SudoSourceError> {
        self.cell
            .get_or_init(|| async {
                self.asked.fetch_add(1, Ordering::SeqCst);
                match &self.asker {
                    Asker::Prompt(f) => f().await.map(Arc::new),
                    Asker::Fixed(p) => Ok(Arc::new(p.clone())),
                    Asker::Command(c) => run_password_command(c).await.map(Arc::new),
                }
            })
            .await
            .clone()
    }
}

async fn run_password_command(command: &str) -> Result<SudoPassword, SudoSourceError> {
    let err = |message: String| SudoSourceError::Command {
        command: command.to_owned(),
        message,
    };
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .map_err(|e| err(e.to_string()))?;
    let mut stdout = Zeroizing::new(out.stdout);
    if !out.status.success() {
        return Err(err(format!("exited with {}", out.status)));
    }
    let line_end = stdout
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(stdout.len());
    let line = std::str::from_utf8(&stdout[..line_end])
        .map_err(|_| err("output is not UTF-8".into()))?
        .to_owned();
    stdout.zeroize();
    Ok(SudoPassword::new(line))
}

/// How a remote command gets its privileges.
#[derive(Clone, Debug, Default)]
pub enum Privilege {
    /// Run as the login user.
    #[default]
    None,
    /// `sudo -n --`: fails at once if sudo would need a password.
    Passwordless,
    /// `sudo -S` fed the run's password through the channel when (and only when) sudo prompts.
    Password(Arc<SudoPasswordSource>),
}

impl Privilege {
    /// The remote command line for a shell command `cmd` under this privilege.
    pub(crate) fn wrap(&self, cmd: &str) -> String {
        match self {
            Privilege::None => cmd.to_owned(),
            Privilege::Passwordless => format!("sudo -n -- sh -c {}", quote(cmd)),
            Privilege::Password(_) => format!(
                "sudo -k -S -p {} -- sh -c {} sh {}",
                quote(SUDO_PROMPT),
                quote("printf 'FLEET-OK\\n' >&2; exec sh -c \"$1\""),
                quote(cmd)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let p = SudoPassword::new("hunter2\n".into());
        assert_eq!(format!("{p:?}"), "<redacted>");
        assert_eq!(&*p.line(), b"hunter2\n");
    }

    #[tokio::test]
    async fn asked_once_even_when_concurrent() {
        let src = Arc::new(SudoPasswordSource::prompt(|| {
            Box::pin(async {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Ok(SudoPassword::new("pw".into()))
            })
        }));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let s = src.clone();
            tasks.push(tokio::spawn(async move { s.get().await.unwrap() }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(src.times_asked(), 1);
    }

    #[tokio::test]
    async fn password_command_first_line() {
        let src = SudoPasswordSource::command("printf 'sekrit\\nignored\\n'");
        let p = src.get().await.unwrap();
        assert_eq!(&*p.line(), b"sekrit\n");
        let bad = SudoPasswordSource::command("exit 3");
        assert!(bad.get().await.is_err());
        assert!(bad.get().await.is_err());
        assert_eq!(bad.times_asked(), 1);
    }

    #[test]
    fn wrapped_commands_parse() {
        let src = Arc::new(SudoPasswordSource::fixed(SudoPassword::new("x".into())));
        let w = Privilege::Password(src).wrap("echo 'a b'");
        assert!(w.starts_with("sudo -k -S -p FLEET-SUDO: -- sh -c "));
        assert!(!w.contains("\"x\""));
        assert_eq!(
            Privilege::Passwordless.wrap("id -u"),
            "sudo -n -- sh -c 'id -u'"
        );
    }
}
