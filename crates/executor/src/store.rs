//! The host's Nix store over a channel of its connection: `nix-store --serve --write` (as root,
//! through the host's privilege, so no signatures are needed) with fleet-store's client on top.

use std::collections::BTreeSet;

use fleet_store::serve::ServeClient;
use fleet_store::StorePath;

use crate::ssh::error::ExecError;
use crate::sudo::Privilege;
use crate::{Connection, RemoteExit, RemoteStdin, RemoteStdout};

/// The serve protocol client over a remote process.
pub type RemoteServe = ServeClient<RemoteStdout, RemoteStdin>;

/// Why the store session failed. `stderr` is what the remote `nix-store` said (it reports
/// errors only there and exits).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("{source}{}", stderr_suffix(.stderr))]
    Protocol {
        #[source]
        source: fleet_store::Error,
        stderr: String,
    },
    #[error("nix-store --serve on {host} exited with {status:?}: {stderr}")]
    Exited {
        host: String,
        status: Option<u32>,
        stderr: String,
    },
}

fn stderr_suffix(s: &str) -> String {
    if s.trim().is_empty() {
        String::new()
    } else {
        format!(" (remote said: {})", s.trim())
    }
}

/// A running `nix-store --serve --write` on a host. Keep it open from the valid-path query
/// (with `lock`) until the profile is switched: its temporary GC roots protect the paths.
pub struct StoreSession {
    pub client: RemoteServe,
    exit: RemoteExit,
}

impl std::fmt::Debug for StoreSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSession")
            .field("host", &self.client.host())
            .finish_non_exhaustive()
    }
}

impl StoreSession {
    /// Starts the remote serve process and does the handshake.
    pub async fn open(conn: &Connection, privilege: &Privilege) -> Result<Self, StoreError> {
        Self::start(conn, "exec nix-store --serve --write", privilege).await
    }

    /// A session that only reads (`nix-store --serve`, no `--write`) as the login user, with no
    /// privilege: enough to ask which paths are valid and for closures. On NixOS a user other
    /// than root reaches the store through the Nix daemon; with no daemon, only root can open it.
    pub async fn open_read_only(conn: &Connection) -> Result<Self, StoreError> {
        Self::start(conn, "exec nix-store --serve", &Privilege::None).await
    }

    async fn start(
        conn: &Connection,
        command: &str,
        privilege: &Privilege,
    ) -> Result<Self, StoreError> {
        let proc = conn.spawn(command, privilege).await?;
        let (stdout, stdin, exit) = proc.into_parts();
        match ServeClient::handshake(stdout, stdin, conn.name()).await {
            Ok(client) => Ok(StoreSession { client, exit }),
            Err(source) => Err(StoreError::Protocol {
                source,
                stderr: finish_stderr(exit).await,
            }),
        }
    }

    /// Which of `paths` the host has. `lock` keeps them from a concurrent GC while this
    /// session lives.
    pub async fn valid_paths(
        &mut self,
        paths: &[StorePath],
        lock: bool,
    ) -> Result<BTreeSet<StorePath>, fleet_store::Error> {
        self.client.query_valid_paths(paths, lock, false).await
    }

    /// Turns a protocol error into a [`StoreError`] with what the remote said, ending the
    /// session (a serve process that failed has exited).
    pub async fn fail(self, source: fleet_store::Error) -> StoreError {
        let StoreSession { client, exit } = self;
        drop(client);
        StoreError::Protocol {
            source,
            stderr: finish_stderr(exit).await,
        }
    }

    /// Ends the session cleanly (EOF at a command boundary).
    pub async fn close(self) -> Result<(), StoreError> {
        let StoreSession { mut client, exit } = self;
        let client_host = client.host().to_owned();
        let _ = client.shutdown().await;
        drop(client);
        let info = exit.finish().await?;
        if info.success() {
            Ok(())
        } else {
            Err(StoreError::Exited {
                host: client_host,
                status: info.status,
                stderr: String::from_utf8_lossy(&info.stderr).trim().to_owned(),
            })
        }
    }
}

async fn finish_stderr(exit: RemoteExit) -> String {
    match tokio::time::timeout(std::time::Duration::from_secs(5), exit.finish()).await {
        Ok(Ok(info)) => String::from_utf8_lossy(&info.stderr).trim().to_owned(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => String::new(),
    }
}
