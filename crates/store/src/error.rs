//! The crate's error type. Every variant says where: which host (a label the caller chose) and,
//! where it applies, which store path.

use std::path::PathBuf;

use crate::path::StorePath;

/// Errors of `fleet-store`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    InvalidStorePath(#[from] fleet_types::InvalidStorePath),

    #[error("{host}: I/O error while {during}")]
    Io {
        host: String,
        during: String,
        #[source]
        source: std::io::Error,
    },

    /// The remote closed the stream in the middle of a reply. The `nix-store --serve` server
    /// reports errors only on stderr and then exits: the caller should read the remote's stderr
    /// and exit status and report [`Error::RemoteFailed`].
    #[error("{host}: remote closed the stream while {during}")]
    UnexpectedEof { host: String, during: String },

    #[error("{host}: protocol error while {during}: {detail}")]
    Protocol {
        host: String,
        during: String,
        detail: String,
    },

    #[error("{host}: remote sent {what} of length {len}, over the limit of {limit}")]
    TooLong {
        host: String,
        what: &'static str,
        len: u64,
        limit: u64,
    },

    #[error("{host}: not a nix-store --serve server (magic {got:#x})")]
    BadMagic { host: String, got: u64 },

    #[error("{host}: serve protocol {version:#x} is too old, need at least {need:#x}")]
    VersionTooOld {
        host: String,
        version: u64,
        need: u64,
    },

    /// A remote (or local) Nix process failed; built by callers that own the process, from its
    /// stderr and exit status.
    #[error("{host}: nix-store failed while {during} (exit status {status:?}): {stderr}")]
    RemoteFailed {
        host: String,
        during: String,
        status: Option<i32>,
        stderr: String,
    },

    /// Adding a path failed. `acknowledged` paths before it were registered.
    #[error("{host}: copying {path} failed ({acknowledged} paths acknowledged before it)")]
    CopyFailed {
        host: String,
        path: StorePath,
        acknowledged: usize,
        #[source]
        source: Box<Error>,
    },

    /// The local NAR source for a path failed (file vanished, changed size, …).
    #[error("reading {path} from the local store ({file}) failed")]
    NarSource {
        path: StorePath,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{host}: the NAR of {path} had {got} bytes, but its path info says {want}")]
    NarSizeMismatch {
        host: String,
        path: StorePath,
        want: u64,
        got: u64,
    },

    #[error("local store: {path} is missing from the path infos (it is referenced by {by})")]
    MissingInfo { path: StorePath, by: StorePath },

    #[error("local store: reference cycle involving {path}")]
    Cycle { path: StorePath },

    #[error("local store: failed to run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },

    /// The copy was cancelled (a consumer went away).
    #[error("{host}: copy cancelled")]
    Cancelled { host: String },
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
