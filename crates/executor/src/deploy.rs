//! The steps of an apply on one host, after planning, by their old names: the copy
//! ([`crate::copy`]) and activation ([`crate::activation`]) are re-exported here, with the error
//! both report.

pub use crate::activation::{
    activate, confirm, deployment_id, failed_units, link_package, result_of, rollback, rollback_to,
    Activated, Activation, Confirmation, DeployState, DeploymentRecord, Goal, OnFailedUnits,
    ACTIVATE_SCRIPT,
};
pub use crate::copy::{
    copy_closures, copy_closures_each, copy_compressed, copy_compressed_each, drop_pending_roots,
    import_command, CopyDone, CopyTarget, ImportTarget, OnCopied, PENDING_ROOTS,
};
pub use crate::error::DeployError;
