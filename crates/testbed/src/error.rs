//! The testbed's error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while preparing, starting, using or tearing down a testbed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Namespaces, bridges and mounts need root.
    #[error("the testbed needs root (it creates network namespaces, bridges and mounts); running as uid {uid}")]
    NotRoot { uid: u32 },
    /// The kernel or the container refuses new namespaces.
    #[error("network and mount namespaces do not work on this machine (`{probe}` failed: {stderr}); a container needs --privileged or CAP_SYS_ADMIN + CAP_NET_ADMIN")]
    NoNamespaces { probe: String, stderr: String },
    /// Tools are missing and could not be installed.
    #[error("missing tools: {}; install them with `apt-get install -y {}` (or run `cargo xtask setup` as root)", missing.join(", "), packages.join(" "))]
    MissingTools {
        missing: Vec<String>,
        packages: Vec<String>,
    },
    /// A process could not be started at all.
    #[error("could not run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    /// A process ran and failed.
    #[error("`{command}` failed ({status}){}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// A file or directory operation failed.
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// All instance numbers are taken.
    #[error("no free testbed instance number in 0..{max} (`fleet-testbed list` shows them, `fleet-testbed cleanup` removes dead ones)")]
    NoFreeInstance { max: u32 },
    /// A host spec is not usable.
    #[error("invalid testbed host `{name}`: {reason}")]
    InvalidHost { name: String, reason: String },
    /// A name that is not a host of this testbed.
    #[error("no host `{name}` in this testbed")]
    UnknownHost { name: String },
    /// sshd did not start listening.
    #[error("sshd of host `{host}` did not listen on {address} within {secs} s; its log:\n{log}")]
    SshdTimeout {
        host: String,
        address: String,
        secs: u64,
        log: String,
    },
    /// The host's namespaces could not be set up.
    #[error("setting up host `{host}` failed: {stderr}")]
    HostSetup { host: String, stderr: String },
    /// `fill_disk` on a host whose `/nix` is not a small tmpfs.
    #[error("host `{host}` has no tmpfs /nix (set `HostSpec::nix_tmpfs_mb`); refusing to fill the machine's disk")]
    NoTmpfs { host: String },
    /// A simulated reboot could not be carried out.
    #[error("reboot of host `{host}` failed: {reason}")]
    Reboot { host: String, reason: String },
    /// A userland root is missing and the Debian mirror it is built from cannot be reached.
    #[error("the {userland} userland cannot be built: the Debian registry {mirror} cannot be reached ({reason})")]
    RegistryUnreachable {
        userland: String,
        mirror: String,
        reason: String,
    },
    /// Building a userland root failed for another reason.
    #[error("building the {userland} userland failed at {step} (log: {}):\n{tail}", log.display())]
    RootBuild {
        userland: String,
        step: String,
        log: PathBuf,
        tail: String,
    },
    /// Teardown could not remove everything.
    #[error("teardown of testbed {instance} left things behind: {}", leftovers.join("; "))]
    Leftovers {
        instance: u32,
        leftovers: Vec<String>,
    },
}

/// The testbed's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
