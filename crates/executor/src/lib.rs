//! fleet-executor: all remote I/O. Native SSH (russh) with one connection per host carrying
//! many channels, strict host keys, agent/key-file auth, `~/.ssh/config`; privilege via sudo
//! with the password asked at most once per run; fan-out over hosts with a bound, a
//! cancellation token and typed events. The library never prints.
//!
//! Layout:
//! - [`ssh`]: [`Connector`] (per run) → [`Connection`] (per host) → `exec` / `spawn`.
//! - [`sudo`]: [`Privilege`], [`SudoPassword`], [`SudoPasswordSource`].
//! - [`quote`]: POSIX quoting for every argument put in a remote command line.
//! - [`facts`]: [`facts::read_facts`], what a host runs (one unprivileged command).
//! - [`store`]: [`store::StoreSession`], the host's store over `nix-store --serve --write`.
//! - [`substitute`]: hosts that fetch from their own substituters first (`substitute = true`).
//! - [`apply`]: [`apply::apply_all`], the apply across planned hosts (copy once, activate, confirm).
//!   Its modules: the orchestration, `apply::host` (the [`apply::Host`] seam and its SSH side),
//!   per-host steps, copy routes; `apply::double` is the in-memory host its unit tests use.
//! - [`copy`]: the copy (fan-out over store sessions, or compressed in segments read and
//!   compressed once, broadcast; [`copy::delta`]: patches against paths the host has).
//! - [`activation`]: the goal, the helper run as root, its modes and exit codes, the record,
//!   confirmation, rollback.
//! - [`deploy`]: [`deploy::DeployError`]; the copy and activation re-exported by their old paths.
//! - `outcome`: [`HostOutcome`] and its typed reasons ([`RollbackReason`], [`SkipReason`],
//!   [`RebootReason`]).
//! - [`health`]: health checks after activation (units, tcp, http, commands), [`health::abort`].
//! - [`reboot`]: reboot a host into a system (one-shot boot entry), wait, verify, check.
//! - [`fanout`]: [`run_hosts`], [`Event`], [`HostOutcome`].

pub mod activation;
pub mod apply;
pub mod copy;
pub mod deploy;
mod error;
pub mod facts;
pub mod fanout;
pub mod health;
mod outcome;
pub mod quote;
pub mod reboot;
pub mod secrets;
pub mod ssh;
pub mod store;
pub mod substitute;
pub mod sudo;

pub use fanout::{
    error_chain, run_hosts, Cancelled, Event, EventKind, EventSink, HostCtx, HostEvents,
    HostOutcome, LogStream, Phase,
};
pub use outcome::{RebootReason, RollbackReason, SkipReason};
pub use quote::{command_line, quote};
pub use ssh::error::{AuthAttempt, ConnectError, ExecError, HostKeyError};
pub use ssh::{
    ConnectOptions, Connection, Connector, ExitInfo, NoPassphrase, Output, PassphraseFuture,
    PassphrasePrompt, RemoteExit, RemoteProcess, RemoteStdin, RemoteStdout, Resolved, SshTarget,
    Stdin,
};
pub use sudo::{Privilege, SudoPassword, SudoPasswordSource, SudoSourceError};
pub use tokio_util::sync::CancellationToken;
