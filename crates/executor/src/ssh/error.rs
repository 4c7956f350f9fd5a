//! Typed errors for connecting and running commands.

use std::path::PathBuf;
use std::time::Duration;

use super::config::SshConfigError;
use crate::sudo::SudoSourceError;

/// Why a host's key was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HostKeyError {
    /// The key pinned in fleet.toml differs from what the host presented.
    #[error(
        "host key of {host} does not match the pinned key: host presented {actual}, pinned {expected}"
    )]
    PinMismatch {
        host: String,
        expected: String,
        actual: String,
    },
    /// The pinned key string could not be parsed.
    #[error("pinned host key for {host} is not an OpenSSH public key (`ssh-ed25519 AAAA...`): {message}")]
    InvalidPin { host: String, message: String },
    /// known_hosts has a different key of the same type for this host.
    #[error(
        "HOST KEY CHANGED for {host}: it presented {actual}, which differs from {path}:{line}; refusing (this is never accepted automatically)"
    )]
    Changed {
        host: String,
        actual: String,
        path: PathBuf,
        line: usize,
    },
    /// known_hosts knows this host only with keys of other types.
    #[error(
        "host {host} presented a {algorithm} key {actual}, but {path} knows it only with other key types; refusing"
    )]
    OtherTypeKnown {
        host: String,
        algorithm: String,
        actual: String,
        path: PathBuf,
    },
    /// Not in known_hosts and accepting new keys was not asked for.
    #[error(
        "host key of {host} is unknown ({actual}, not in {path}); after checking it out of band, pin it in fleet.toml under the host: `host-key = \"{pin}\"`, or run with --accept-new-host-keys to record it"
    )]
    Unknown {
        host: String,
        actual: String,
        path: PathBuf,
        /// The key as fleet.toml's `host-key` value.
        pin: String,
    },
    /// Host certificates are not supported.
    #[error(
        "{host} presented a host certificate; certificates are not supported, pin the key instead"
    )]
    Certificate { host: String },
    /// known_hosts could not be read or written.
    #[error("known_hosts file {path}: {message}")]
    KnownHostsFile { path: PathBuf, message: String },
}

/// One authentication attempt, for the error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthAttempt {
    /// `agent`, `key`.
    pub method: String,
    /// Which key (agent comment or file path).
    pub what: String,
    /// `rejected`, or why it could not be tried.
    pub result: String,
}

impl std::fmt::Display for AuthAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({})", self.method, self.what, self.result)
    }
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Config(#[from] SshConfigError),
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connection to {host}:{port} refused (is sshd running?)")]
    Refused { host: String, port: u16 },
    #[error("cannot connect to {host}:{port}: {source}")]
    Io {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {host}:{port} timed out after {after:?} ({stage})")]
    Timeout {
        host: String,
        port: u16,
        after: Duration,
        /// `tcp` or `ssh handshake`.
        stage: &'static str,
    },
    #[error(transparent)]
    HostKey(#[from] HostKeyError),
    #[error("authentication as {user}@{host} failed; tried: {}; server accepts: {}",
        if .tried.is_empty() { "nothing (no agent keys, no identity files)".to_string() }
        else { .tried.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ") },
        .server_methods.join(", "))]
    Auth {
        user: String,
        host: String,
        tried: Vec<AuthAttempt>,
        server_methods: Vec<String>,
    },
    #[error("bad ProxyJump `{value}`: {message}")]
    BadProxyJump { value: String, message: String },
    #[error("ProxyJump chain for {host} is longer than {max} hops (a loop?)")]
    JumpLoop { host: String, max: usize },
    #[error("through jump host {jump}: {source}")]
    Jump {
        jump: String,
        #[source]
        source: Box<ConnectError>,
    },
    #[error("jump host {jump} could not open a tunnel to {host}:{port}: {source}")]
    Tunnel {
        jump: String,
        host: String,
        port: u16,
        #[source]
        source: Box<russh::Error>,
    },
    #[error("ssh protocol error with {host}:{port}: {source}")]
    Ssh {
        host: String,
        port: u16,
        #[source]
        source: Box<russh::Error>,
    },
}

/// Why a remote command did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot open a channel on {host}: {source}")]
    Channel {
        host: String,
        #[source]
        source: Box<russh::Error>,
    },
    /// The connection went away while the command ran: it may or may not have completed.
    #[error("lost the connection to {host} while `{command}` ran: outcome unknown")]
    UnknownOutcome { host: String, command: String },
    #[error("wrong sudo password on {host} (asked once; not retried)")]
    WrongSudoPassword { host: String },
    /// sudo refused to run the command at all (not in sudoers, `-n` needed a password, ...).
    #[error("sudo on {host} refused: {message}")]
    SudoRefused { host: String, message: String },
    #[error("no sudo password for {host}: {source}")]
    SudoPassword {
        host: String,
        #[source]
        source: SudoSourceError,
    },
    #[error("writing stdin to `{command}` on {host}: {source}")]
    Stdin {
        host: String,
        command: String,
        #[source]
        source: std::io::Error,
    },
}
