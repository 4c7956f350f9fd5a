//! Reading each host's state over one SSH connection per host, in parallel (bounded): what it
//! runs (one unprivileged command) and, when a desired closure is given, which of its paths
//! the host already has and the closure of what it runs now (one store session, two requests).

use std::collections::BTreeSet;
use std::sync::Arc;

use fleet_executor::facts::{read_facts, RemoteFacts};
use fleet_executor::store::StoreSession;
use fleet_executor::{error_chain, CancellationToken, Connection, Privilege, SshTarget};
use fleet_inventory::Host;
use fleet_planner::{FactsError, RemoteState};
use fleet_store::StorePath;
use fleet_types::HostName;
use futures::StreamExt;

use crate::desired::Desired;
use crate::events::RunKind;
use crate::remote::{self, Remote};

/// A host reached, with what was read.
pub struct Reached {
    pub target: SshTarget,
    pub privilege: Privilege,
    pub conn: Arc<Connection>,
    pub facts: RemoteFacts,
    /// Open when a desired closure was queried and `keep_store` was asked: its temporary GC
    /// roots keep the host's valid paths until the profile is switched.
    pub store: Option<StoreSession>,
    /// Paths of the desired closure the host has.
    pub present: BTreeSet<String>,
    /// The closure of the host's current system (empty when it has none or it was not asked).
    pub current_closure: Vec<String>,
    /// `substitute = true`: which missing paths its substituters offer (`scale.rs`).
    pub substitutable: Option<BTreeSet<String>>,
}

impl Reached {
    /// The planner's view of this host.
    pub fn remote_state(&self) -> RemoteState {
        let mut state = self
            .facts
            .remote_state(self.present.clone(), self.current_closure.clone());
        state.substitutable = self.substitutable.clone();
        state.flake = crate::desired::recorded_flake(self.facts.deployment.as_ref());
        state
    }
}

/// Per host in input order: reached, or why not (which stage failed).
pub type Gathered = Vec<(HostName, Result<Reached, FactsError>)>;

/// What to read besides the facts.
#[derive(Clone, Copy)]
pub struct Want {
    /// Query the store: which desired paths are present, and the current closure.
    pub store: bool,
    /// Keep the store session open (apply), else close it (plan).
    pub keep_store: bool,
}

/// Connects to every host (at most `parallel` at once) and reads its state. A host not
/// started when `cancel` fires is reported as interrupted.
pub async fn gather(
    remote: &Remote,
    hosts: &[&Host],
    desired: Option<&Desired>,
    want: Want,
    parallel: usize,
    cancel: &CancellationToken,
) -> Gathered {
    let reached = connect(remote, hosts, parallel, cancel, &|_| {}).await;
    match desired {
        Some(d) if want.store => query_stores(reached, d, want.keep_store, parallel).await,
        _ => reached,
    }
}

/// The first step, which needs nothing built: connect to every host (at most `parallel` at
/// once; host keys, authentication) and read its facts. Each step of each host is an event
/// given to `on` as it happens (connected, a host key recorded, facts read, unreachable), so
/// a down host or an unknown host key is reported at once, while the systems still build.
pub async fn connect(
    remote: &Remote,
    hosts: &[&Host],
    parallel: usize,
    cancel: &CancellationToken,
    on: &(dyn Fn(RunKind) + Sync),
) -> Gathered {
    let jobs: Vec<_> = hosts
        .iter()
        .map(|h| (h.name.clone(), remote::target(h), remote.privilege(h)))
        .collect();
    futures::stream::iter(jobs)
        .map(|(name, target, privilege)| {
            let connector = remote.connector.clone();
            let cancel = cancel.clone();
            async move {
                if cancel.is_cancelled() {
                    return (name, Err(FactsError::NotStarted));
                }
                let r = tokio::select! {
                    r = reach(&connector, target, privilege, &name, on) => r,
                    () = cancel.cancelled() => Err(FactsError::Interrupted),
                };
                if let Err(error) = &r {
                    on(RunKind::Unreachable {
                        host: name.to_string(),
                        error: error.to_string(),
                    });
                }
                (name, r)
            }
        })
        .buffered(parallel.max(1))
        .collect()
        .await
}

/// The second step, once the desired closures exist: for each reached host with a desired
/// system, which of its paths the host has and the closure of what it runs. `keep_store`
/// keeps the store session open (apply), else it is closed (plan).
pub async fn query_stores(
    reached: Gathered,
    desired: &Desired,
    keep_store: bool,
    parallel: usize,
) -> Gathered {
    futures::stream::iter(reached)
        .map(|(name, r)| {
            let closure: Vec<String> = desired
                .get(&name)
                .map(|d| d.closure.iter().map(|c| c.path.clone()).collect())
                .unwrap_or_default();
            async move {
                let mut reached = match r {
                    Ok(reached) if !closure.is_empty() => reached,
                    other => return (name, other),
                };
                let r = match query_store(&mut reached, &closure, keep_store).await {
                    Ok(session) if keep_store => {
                        reached.store = Some(session);
                        Ok(reached)
                    }
                    Ok(session) => {
                        let _ = session.close().await;
                        Ok(reached)
                    }
                    Err(e) => {
                        reached.conn.close().await;
                        Err(FactsError::Store { reason: e })
                    }
                };
                (name, r)
            }
        })
        .buffered(parallel.max(1))
        .collect()
        .await
}

async fn reach(
    connector: &fleet_executor::Connector,
    target: SshTarget,
    privilege: Privilege,
    name: &str,
    on: &(dyn Fn(RunKind) + Sync),
) -> Result<Reached, FactsError> {
    let conn = connector
        .connect(&target)
        .await
        .map_err(|e| FactsError::Unreachable {
            reason: error_chain(&e),
        })?;
    on(RunKind::Connected {
        host: name.to_owned(),
    });
    if let Some(key) = conn.learned_host_key() {
        on(RunKind::HostKeyRecorded {
            host: name.to_owned(),
            key: key.to_string(),
        });
    }
    let conn = Arc::new(conn);
    let facts = match read_facts(&conn).await {
        Ok(f) => {
            on(RunKind::Facts {
                host: name.to_owned(),
                current: f.current.clone(),
                booted: f.booted.clone(),
                generation: f.generation,
                system: f.system.clone(),
            });
            f
        }
        Err(e) => {
            conn.close().await;
            return Err(FactsError::State {
                reason: error_chain(&e),
            });
        }
    };
    Ok(Reached {
        target,
        privilege,
        conn,
        facts,
        store: None,
        present: BTreeSet::new(),
        current_closure: Vec::new(),
        substitutable: None,
    })
}

/// One store session: which closure paths are valid (locked when the session is kept), and
/// the current closure. Kept sessions (apply) are `nix-store --serve --write` with the host's
/// privilege; others (plan) first try a read-only session as the login user, which needs no
/// root (and so no sudo password) where the Nix daemon serves other users, as on NixOS.
async fn query_store(
    reached: &mut Reached,
    closure: &[String],
    keep: bool,
) -> Result<StoreSession, String> {
    let paths: Vec<StorePath> = closure
        .iter()
        .filter_map(|p| StorePath::new(p.clone()).ok())
        .collect();
    let mut session = if keep {
        StoreSession::open(&reached.conn, &reached.privilege)
            .await
            .map_err(|e| error_chain(&e))
    } else {
        match StoreSession::open_read_only(&reached.conn).await {
            Ok(s) => Ok(s),
            Err(e) if matches!(reached.privilege, Privilege::None) => Err(error_chain(&e)),
            Err(first) => StoreSession::open(&reached.conn, &reached.privilege)
                .await
                .map_err(|e| {
                    format!(
                        "as the login user (is the Nix daemon running?): {}; as root: {}",
                        error_chain(&first),
                        error_chain(&e)
                    )
                }),
        }
    }?;
    let valid = match session.valid_paths(&paths, keep).await {
        Ok(v) => v,
        Err(e) => return Err(error_chain(&session.fail(e).await)),
    };
    reached.present = valid.into_iter().map(String::from).collect();
    if let Some(current) = reached
        .facts
        .current
        .as_ref()
        .and_then(|c| StorePath::new(c.clone()).ok())
    {
        match session.client.query_closure(&[current], false).await {
            Ok(c) => reached.current_closure = c.into_iter().map(String::from).collect(),
            Err(e) => return Err(error_chain(&session.fail(e).await)),
        }
    }
    Ok(session)
}
