//! The seam between the apply orchestration and SSH: [`Host`] is what an apply does to one
//! planned host after its copy (secrets, activation, checks, confirmation, reading back a
//! result, closing); [`SshHost`] does it over the host's russh connection. The orchestration
//! (`apply/mod.rs`, `steps.rs`) knows only the trait, so its unit tests script a double.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::activation::{self, Activated, Activation, Confirmation, DeployState, Goal};
use crate::copy;
use crate::error::DeployError;
use crate::fanout::{HostEvents, HostOutcome};
use crate::health::{self, HealthSpec};
use crate::secrets::{self, HostSecret};
use crate::store::StoreSession;
use crate::sudo::Privilege;
use crate::{Connection, Connector, SshTarget};

/// What an apply does to one host once its copy is complete. Every step reports its result as
/// a value; the outcome is the orchestration's to decide.
pub trait Host: Send + Sync + 'static {
    /// Places all the host's secrets without activating (only the package is linked).
    /// `Some`: how the host failed.
    fn push_secrets(&self, ev: &HostEvents) -> impl Future<Output = Option<HostOutcome>> + Send;
    /// Places the `before-activation` secrets. `Some`: not placed, the host must not activate.
    fn secrets_before(&self, ev: &HostEvents) -> impl Future<Output = Option<HostOutcome>> + Send;
    /// Places the `after-activation` secrets and removes stale ones; `confirming`: the
    /// confirmation window the host awaits, if any.
    fn secrets_after(
        &self,
        ev: &HostEvents,
        confirming: Option<Duration>,
    ) -> impl Future<Output = Option<HostOutcome>> + Send;
    /// Links the deployment package only (the host runs the system already).
    fn link_package(&self, a: &Activation) -> impl Future<Output = Result<(), DeployError>> + Send;
    /// Runs the activation helper (detached on the host). A dropped connection is
    /// `DeployError::Exec(ExecError::UnknownOutcome)`: the orchestration asks again.
    fn activate(
        &self,
        a: &Activation,
    ) -> impl Future<Output = Result<Activated, DeployError>> + Send;
    /// Runs the health checks over a new connection; `None`: passed, or the host could not be
    /// reached (confirmation decides). `unconfirmed`: nothing awaits confirmation.
    fn check(
        &self,
        ev: &HostEvents,
        spec: &HealthSpec,
        id: &str,
        goal: Goal,
        unconfirmed: bool,
    ) -> impl Future<Output = Option<HostOutcome>> + Send;
    /// Confirms deployment `id` over a new connection, retrying until `deadline`.
    fn confirm(&self, id: &str, deadline: Instant) -> impl Future<Output = Confirmation> + Send;
    /// Connects anew (one attempt, bounded) and reads what became of deployment `id`;
    /// `None`: not reachable, or not readable.
    fn result_anew(&self, id: &str) -> impl Future<Output = Option<DeployState>> + Send;
    /// After the host's outcome: closes its store session, drops what the copy rooted, and
    /// closes the connection.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// A host reached over SSH.
pub struct SshHost {
    pub(crate) connector: Arc<Connector>,
    pub(crate) target: SshTarget,
    pub(crate) conn: Arc<Connection>,
    pub(crate) privilege: Privilege,
    pub(crate) secrets: Vec<HostSecret>,
    /// Its store session, back from the copy (or never lent to it): closed only after
    /// activation, as its temporary GC roots protect the paths the host already had until the
    /// profile is switched.
    pub(crate) session: Option<oneshot::Receiver<StoreSession>>,
    /// The compressed copy rooted its paths under `fleet-pending/<id>`: drop them at the end,
    /// whatever happened (the helper drops them too, but a failed or skipped copy never
    /// reaches it, and its garbage must stay collectable).
    pub(crate) pending_roots: Option<String>,
    /// What a relayed copy still owes this host (its `authorized_keys` line, its FIFO), run
    /// before the connection closes (a copy cancelled by Ctrl-C; docs/relay.md).
    pub(crate) relay_cleanups: Option<crate::copy::relay::Cleanups>,
}

impl Host for SshHost {
    async fn push_secrets(&self, ev: &HostEvents) -> Option<HostOutcome> {
        secrets::push(&self.conn, &self.privilege, &self.secrets, ev)
            .await
            .err()
            .map(|e| HostOutcome::failed(&e))
    }

    async fn secrets_before(&self, ev: &HostEvents) -> Option<HostOutcome> {
        secrets::before_activation(&self.conn, &self.privilege, &self.secrets, ev).await
    }

    async fn secrets_after(
        &self,
        ev: &HostEvents,
        confirming: Option<Duration>,
    ) -> Option<HostOutcome> {
        secrets::after_activation(&self.conn, &self.privilege, &self.secrets, ev, confirming).await
    }

    async fn link_package(&self, a: &Activation) -> Result<(), DeployError> {
        activation::link_package(&self.conn, &self.privilege, a).await
    }

    async fn activate(&self, a: &Activation) -> Result<Activated, DeployError> {
        activation::activate(&self.conn, &self.privilege, a).await
    }

    async fn check(
        &self,
        ev: &HostEvents,
        spec: &HealthSpec,
        id: &str,
        goal: Goal,
        unconfirmed: bool,
    ) -> Option<HostOutcome> {
        let on = health::OnHost {
            connector: &self.connector,
            target: &self.target,
            privilege: &self.privilege,
            id,
            goal,
        };
        health::check_host(&on, ev, spec, unconfirmed).await
    }

    async fn confirm(&self, id: &str, deadline: Instant) -> Confirmation {
        let (connector, target, privilege) = (&self.connector, &self.target, &self.privilege);
        activation::confirm(connector, target, privilege, id, deadline.into_std()).await
    }

    async fn result_anew(&self, id: &str) -> Option<DeployState> {
        let connect = self.connector.connect(&self.target);
        let conn = tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .ok()?
            .ok()?;
        let r = activation::result_of(&conn, &self.privilege, id).await;
        conn.close().await;
        r.ok()
    }

    async fn close(self) {
        if let Some(rx) = self.session {
            // It waits here for the end of a serve copy.
            if let Ok(s) = rx.await {
                let _ = s.close().await;
            }
        }
        if let Some(c) = &self.relay_cleanups {
            c.run_on(&self.conn).await;
        }
        if let Some(id) = &self.pending_roots {
            let _ = copy::drop_pending_roots(&self.conn, &self.privilege, id).await;
        }
        self.conn.close().await;
    }
}
