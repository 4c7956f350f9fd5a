//! Commands about one host (`fleet logs`, `generations`, `diff`): the host named on the
//! command line, one connection to it, and its privilege.

use std::sync::Arc;

use fleet_executor::{error_chain, Connection, Privilege, Stdin};
use fleet_inventory::{Host, Inventory};

use crate::args::GlobalArgs;
use crate::error::CliError;
use crate::remote::{self, Remote};

/// One host reached.
pub struct OneHost {
    pub name: String,
    pub conn: Arc<Connection>,
    pub privilege: Privilege,
    /// Keeps the run's sudo password source alive.
    _remote: Remote,
}

/// The host `given` names (a name, or a selector that selects exactly one host).
pub fn find<'i>(inventory: &'i Inventory, given: &str) -> Result<&'i Host, CliError> {
    let hosts = inventory.select(Some(given))?;
    match hosts.as_slice() {
        [h] => Ok(h),
        many => Err(CliError::NotOneHost {
            given: given.to_owned(),
            matched: many
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Connects to `host`; with `privileged`, commands may run as root (a sudo password is asked
/// now, when the host needs one).
pub async fn connect(
    global: &GlobalArgs,
    host: &Host,
    privileged: bool,
) -> Result<OneHost, CliError> {
    let remote = Remote::new(global, &[host], privileged).await?;
    let conn = remote
        .connector
        .connect(&remote::target(host))
        .await
        .map_err(|e| CliError::Host {
            host: host.name.to_string(),
            message: format!("unreachable: {}", error_chain(&e)),
        })?;
    let privilege = if privileged {
        remote.privilege(host)
    } else {
        Privilege::None
    };
    Ok(OneHost {
        name: host.name.to_string(),
        conn: Arc::new(conn),
        privilege,
        _remote: remote,
    })
}

/// What a command printed, and its exit code (`None`: killed by a signal).
pub struct Ran {
    pub code: Option<u32>,
    pub stdout: String,
    pub stderr: String,
}

impl OneHost {
    /// Runs the shell command `cmd` (quote what it interpolates) with the host's privilege.
    pub async fn run(&self, cmd: &str) -> Result<Ran, CliError> {
        let out = self
            .conn
            .exec(cmd, &self.privilege, Stdin::None)
            .await
            .map_err(|e| self.error(error_chain(&e)))?;
        Ok(Ran {
            code: out.status,
            stdout: out.stdout_lossy(),
            stderr: out.stderr_lossy(),
        })
    }

    /// An error about this host.
    pub fn error(&self, message: impl Into<String>) -> CliError {
        CliError::Host {
            host: self.name.clone(),
            message: message.into(),
        }
    }
}
