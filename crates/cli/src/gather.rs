//! Reading each host's state over one SSH connection per host, in parallel (bounded): what it
//! runs (one unprivileged command) and, when a desired closure is given, which of its paths
//! the host already has and the closure of what it runs now (one store session, two requests).

use std::collections::{BTreeMap, BTreeSet};
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
    reach_all(remote, hosts, parallel, cancel, on, None)
        .map(|(name, r, _)| (name, r))
        .collect()
        .await
}

/// A store session opened before the closure to ask about is known (or why it could not be).
type Opened = Option<Result<StoreSession, String>>;

/// Reaches every host (at most `parallel` at once), in input order; with `open_store`
/// (`keep_store`), also opens its store session at once, so that it is ready when the closure
/// to ask about is.
fn reach_all<'a>(
    remote: &'a Remote,
    hosts: &[&Host],
    parallel: usize,
    cancel: &'a CancellationToken,
    on: &'a (dyn Fn(RunKind) + Sync),
    open_store: Option<bool>,
) -> impl futures::Stream<Item = (HostName, Result<Reached, FactsError>, Opened)> + 'a {
    let jobs: Vec<_> = hosts
        .iter()
        .map(|h| (h.name.clone(), remote::target(h), remote.privilege(h)))
        .collect();
    futures::stream::iter(jobs)
        .map(move |(name, target, privilege)| {
            let connector = remote.connector.clone();
            let cancel = cancel.clone();
            async move {
                if cancel.is_cancelled() {
                    return (name, Err(FactsError::NotStarted), None);
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
                let opened = match (&r, open_store) {
                    // A host that runs a system may run the desired one: then neither a plan
                    // nor an apply needs its store (see `reach_and_query`); it is opened once
                    // that is known.
                    (Ok(reached), Some(_)) if reached.facts.current.is_some() => None,
                    (Ok(reached), Some(keep)) => tokio::select! {
                        s = open_store_session(reached, keep) => Some(s),
                        () = cancel.cancelled() => None,
                    },
                    _ => None,
                };
                (name, r, opened)
            }
        })
        .buffered(parallel.max(1))
}

/// What [`reach_and_query`] needs of a host's desired system.
pub struct Wanted {
    closure: Vec<String>,
    toplevel: String,
    package: String,
    /// The toplevel's own closure (what the host's current closure is when it runs it).
    toplevel_closure: Vec<String>,
}

/// Each host's desired system, once the desired systems exist (`None`: there are none, the
/// run stops).
pub type Closures = tokio::sync::watch::Receiver<Option<Arc<BTreeMap<HostName, Wanted>>>>;

/// The closures of `desired` per host, as [`reach_and_query`] waits for them.
pub fn closures(desired: &Desired) -> BTreeMap<HostName, Wanted> {
    desired
        .hosts
        .iter()
        .filter_map(|(name, d)| {
            let d = d.as_ref().ok()?;
            let wanted = Wanted {
                closure: d.closure.iter().map(|c| c.path.clone()).collect(),
                toplevel: d.toplevel.clone(),
                package: d.package.clone(),
                toplevel_closure: desired.closure_of(&d.toplevel),
            };
            Some((name.clone(), wanted))
        })
        .collect()
}

/// The host already runs `wanted`'s toplevel and holds its package (the facts say so): both
/// are valid in its store, so their whole closures are (Nix keeps a valid path's closure
/// valid), and what it runs has the toplevel's closure. No store session is needed.
fn runs_wanted(reached: &Reached, wanted: &Wanted) -> bool {
    reached.facts.current.as_deref() == Some(wanted.toplevel.as_str())
        && reached.facts.package.as_deref() == Some(wanted.package.as_str())
}

/// [`connect`] and [`query_stores`] as one pipeline per host: each host is reached (at most
/// `parallel` at once) and, unless it runs a system already (it may run the desired one), its
/// store session opened while the desired systems are still being built; when `closures` says
/// what they are, every host's store is asked at once (at most `parallel` queries at a time),
/// without waiting for the slowest host to be reached. Neither a plan nor an apply asks the
/// store of a host that already runs its desired toplevel and package ([`runs_wanted`]): it
/// lacks nothing, so an apply has nothing to copy to it (at most an activation or a relink).
pub async fn reach_and_query(
    remote: &Remote,
    hosts: &[&Host],
    parallel: usize,
    cancel: &CancellationToken,
    on: &(dyn Fn(RunKind) + Sync),
    closures: Closures,
    keep_store: bool,
) -> Gathered {
    let queries = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    reach_all(remote, hosts, parallel, cancel, on, Some(keep_store))
        .map(|(name, r, opened)| {
            let (mut closures, queries) = (closures.clone(), queries.clone());
            async move {
                let all = tokio::select! {
                    c = closures.wait_for(Option::is_some) => c.ok().and_then(|c| c.clone()),
                    () = cancel.cancelled() => None,
                };
                let wanted = all.as_ref().and_then(|m| m.get(&name));
                let mut reached = match r {
                    Ok(reached) => reached,
                    other => return (name, other),
                };
                let wanted = match wanted {
                    Some(w) if !w.closure.is_empty() => w,
                    _ => {
                        if let Some(Ok(session)) = opened {
                            let _ = session.close().await;
                        }
                        return (name, Ok(reached));
                    }
                };
                if runs_wanted(&reached, wanted) {
                    if let Some(Ok(session)) = opened {
                        let _ = session.close().await;
                    }
                    reached.present = wanted.closure.iter().cloned().collect();
                    reached.current_closure = wanted.toplevel_closure.clone();
                    return (name, Ok(reached));
                }
                let _permit = queries.acquire().await;
                let r = finish_query(&mut reached, &wanted.closure, keep_store, opened).await;
                (name, r.map(|()| reached))
            }
        })
        .buffered(hosts.len().max(1))
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
                let r = finish_query(&mut reached, &closure, keep_store, None).await;
                (name, r.map(|()| reached))
            }
        })
        .buffered(parallel.max(1))
        .collect()
        .await
}

/// Asks the host's store about `closure` (over `opened` when a session is open already),
/// keeps the session when `keep_store`, else closes it. A failure ends the connection.
async fn finish_query(
    reached: &mut Reached,
    closure: &[String],
    keep_store: bool,
    opened: Opened,
) -> Result<(), FactsError> {
    let session = match opened {
        Some(Ok(session)) => Ok(session),
        // Not opened yet, or it failed then: open it now (and say why if it fails again).
        _ => open_store_session(reached, keep_store).await,
    };
    let queried = match session {
        Ok(session) => query_store(reached, session, closure, keep_store).await,
        Err(e) => Err(e),
    };
    match queried {
        Ok(session) if keep_store => {
            reached.store = Some(session);
            Ok(())
        }
        Ok(session) => {
            let _ = session.close().await;
            Ok(())
        }
        Err(e) => {
            reached.conn.close().await;
            Err(FactsError::Store { reason: e })
        }
    }
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

/// Opens the host's store session: kept sessions (apply) are `nix-store --serve --write` with
/// the host's privilege; others (plan) first try a read-only session as the login user, which
/// needs no root (and so no sudo password) where the Nix daemon serves other users, as on
/// NixOS.
async fn open_store_session(reached: &Reached, keep: bool) -> Result<StoreSession, String> {
    if keep {
        return StoreSession::open(&reached.conn, &reached.privilege)
            .await
            .map_err(|e| error_chain(&e));
    }
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
}

/// Over an open session: which closure paths are valid (locked when the session is kept),
/// and the current closure.
async fn query_store(
    reached: &mut Reached,
    mut session: StoreSession,
    closure: &[String],
    keep: bool,
) -> Result<StoreSession, String> {
    let paths: Vec<StorePath> = closure
        .iter()
        .filter_map(|p| StorePath::new(p.clone()).ok())
        .collect();
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
