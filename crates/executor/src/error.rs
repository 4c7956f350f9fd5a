//! [`DeployError`]: why a copy or activation step on a host failed.

use crate::ssh::error::{ConnectError, ExecError};
use crate::store::StoreError;

/// Why a deploy step failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("importing into the store of {host} failed (exit {status:?}): {stderr}")]
    Import {
        host: String,
        status: Option<u32>,
        stderr: String,
    },
    #[error("reading the local store failed: {0}")]
    Source(String),
    #[error("activation on {host} was refused (exit {status:?}): {stderr}")]
    Refused {
        host: String,
        status: Option<u32>,
        stderr: String,
    },
    #[error("{stderr}")]
    Locked { host: String, stderr: String },
    #[error("activation on {host} failed (not rolled back, as asked): {stderr}")]
    ActivationFailed { host: String, stderr: String },
    #[error("activation on {host} failed and so did the rollback: {stderr}")]
    RollbackFailed { host: String, stderr: String },
    #[error("rollback on {host} failed (exit {status:?}): {stderr}")]
    Rollback {
        host: String,
        status: Option<u32>,
        stderr: String,
    },
}
