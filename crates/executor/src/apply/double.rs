//! An in-memory [`Host`] and copy whose behaviour a test scripts (slow, failing at a step,
//! losing the connection, refusing), and which record what was done to them: the apply
//! orchestration's unit tests run on them, without SSH or root, in paused time.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::host::Host;
use super::route::CopyPhase;
use super::Copied;
use crate::activation::{
    Activated, Activation, Confirmation, DeployState, DeploymentRecord, Goal, OnFailedUnits,
};
use crate::copy::CopyDone;
use crate::error::DeployError;
use crate::fanout::{HostEvents, HostOutcome};
use crate::health::HealthSpec;
use crate::ssh::error::ExecError;

/// How the fake activation ends.
#[derive(Debug, Clone, Default)]
pub enum Act {
    /// switch-to-configuration succeeded.
    #[default]
    Done,
    /// The helper refused (bad input, exit 10).
    Refuse,
    /// switch-to-configuration failed and the helper rolled back.
    RolledBack(String),
    /// The connection dropped while the helper ran.
    LoseConnection,
    /// The host task panics.
    Panic,
}

/// What a fake host does.
#[derive(Debug, Clone)]
pub struct Script {
    /// How long its activation takes.
    pub activate_for: Duration,
    pub act: Act,
    /// What confirming says.
    pub confirm: Confirmation,
    /// What asking again over a new connection says (`None`: unreachable).
    pub result_anew: Option<DeployState>,
    /// Placing its before-activation secrets fails.
    pub secrets_fail: bool,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            activate_for: Duration::from_secs(10),
            act: Act::Done,
            confirm: Confirmation::Confirmed,
            result_anew: None,
            secrets_fail: false,
        }
    }
}

/// What the fake hosts of a test saw, shared between them.
#[derive(Debug, Default)]
pub struct Record {
    /// Activations running now, and the most at once.
    active: AtomicUsize,
    pub peak: AtomicUsize,
    /// `(host, step)` in the order they happened.
    pub steps: Mutex<Vec<(String, &'static str)>>,
}

impl Record {
    fn note(&self, host: &str, step: &'static str) {
        self.steps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((host.to_owned(), step));
    }

    /// The hosts that did `step`, in order.
    pub fn did(&self, step: &str) -> BTreeSet<String> {
        let steps = self.steps.lock().unwrap_or_else(|p| p.into_inner());
        steps
            .iter()
            .filter(|(_, s)| *s == step)
            .map(|(h, _)| h.clone())
            .collect()
    }
}

/// An in-memory host.
pub struct FakeHost {
    pub name: String,
    pub script: Script,
    pub record: Arc<Record>,
}

impl Host for FakeHost {
    async fn push_secrets(&self, _: &HostEvents) -> Option<HostOutcome> {
        self.record.note(&self.name, "push-secrets");
        None
    }

    async fn secrets_before(&self, _: &HostEvents) -> Option<HostOutcome> {
        self.record.note(&self.name, "secrets-before");
        self.script.secrets_fail.then(|| HostOutcome::Failed {
            error: "secret x: cannot place it; the host was not activated".into(),
        })
    }

    async fn secrets_after(&self, _: &HostEvents, _: Option<Duration>) -> Option<HostOutcome> {
        self.record.note(&self.name, "secrets-after");
        None
    }

    async fn link_package(&self, _: &Activation) -> Result<(), DeployError> {
        self.record.note(&self.name, "link");
        Ok(())
    }

    async fn activate(&self, a: &Activation) -> Result<Activated, DeployError> {
        self.record.note(&self.name, "activate");
        let now = self.record.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.record.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.script.activate_for).await;
        self.record.active.fetch_sub(1, Ordering::SeqCst);
        let host = self.name.clone();
        match &self.script.act {
            Act::Done => Ok(Activated::Done {
                pending_confirmation: a.goal.activates() && a.confirm_timeout.is_some(),
                failed_units: Vec::new(),
                log: "activating the configuration...\n".into(),
            }),
            Act::Refuse => Err(DeployError::Refused {
                host,
                status: Some(10),
                stderr: "not a NixOS system".into(),
            }),
            Act::RolledBack(log) => Ok(Activated::RolledBack { log: log.clone() }),
            Act::LoseConnection => Err(DeployError::Exec(ExecError::UnknownOutcome {
                host,
                command: "activate".into(),
            })),
            Act::Panic => panic!("scripted panic"),
        }
    }

    async fn check(
        &self,
        _: &HostEvents,
        _: &HealthSpec,
        _: &str,
        _: Goal,
        _: bool,
    ) -> Option<HostOutcome> {
        self.record.note(&self.name, "check");
        None
    }

    async fn confirm(&self, _: &str, _: Instant) -> Confirmation {
        self.record.note(&self.name, "confirm");
        self.script.confirm.clone()
    }

    async fn result_anew(&self, _: &str) -> Option<DeployState> {
        self.record.note(&self.name, "result-anew");
        // A reconnection attempt takes a moment.
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.script.result_anew
    }

    async fn close(self) {
        self.record.note(&self.name, "close");
    }
}

/// The scripted shared copy: host `i` is told `how` after `after`.
pub struct FakeCopy(pub Vec<(usize, Duration, Copied)>);

impl CopyPhase for FakeCopy {
    async fn run(self, tell: &(dyn Fn(usize, Copied) + Sync)) {
        let parts = self.0.into_iter().map(|(i, after, how)| async move {
            tokio::time::sleep(after).await;
            tell(i, how);
        });
        futures::future::join_all(parts).await;
    }
}

/// A copy that went well.
pub fn copied() -> Copied {
    Ok(CopyDone {
        paths: 3,
        nar_bytes: 1000,
        wire_bytes: None,
    })
}

/// A `switch` with a 30 s confirm timeout.
pub fn activation(id: &str) -> Activation {
    let record = DeploymentRecord {
        commit: None,
        dirty: None,
        by: "test@here".into(),
        at: "2026-01-01T00:00:00Z".into(),
        toplevel: "/nix/store/aaaa-nixos-system".into(),
        package: "/nix/store/bbbb-fleet-package".into(),
        goal: Goal::Switch,
        fleet_version: "0".into(),
        id: id.into(),
        flake: None,
    };
    Activation {
        goal: Goal::Switch,
        toplevel: record.toplevel.clone(),
        package: record.package.clone(),
        confirm_timeout: Some(Duration::from_secs(30)),
        auto_rollback: true,
        on_failed_units: OnFailedUnits::Keep,
        install_bootloader: false,
        specialisation: None,
        activate: true,
        record,
    }
}
