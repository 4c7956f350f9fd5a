//! fleet-planner: the pure core of `fleet plan` and `fleet apply`.
//!
//! Given per host the desired system (evaluated and built locally, or why that failed) and the
//! facts read from the host (or why it could not be reached), [`plan`] decides per host what apply
//! will do: `install`, `update`, `unchanged` or `error`, which store paths to copy, a package diff
//! of the closures and whether a reboot is needed. The [`Plan`] is plain serde data: rendered for
//! humans with [`render`], saved as JSON with [`Plan::to_json`] and read back with
//! [`Plan::from_json`]; [`check_still_valid`] tells apply whether a host drifted since.
//!
//! No I/O, no async, no printing. Host names and systems are fleet-types' checked newtypes,
//! store paths in the plan are strings; why a host has no system or no facts is typed
//! ([`DesiredError`], [`FactsError`]). See `docs/plan.md` for the rules and the JSON format.
//!
//! # Layout
//! - `input`: what the planner is given ([`HostInput`], [`DesiredHost`], [`RemoteState`]).
//! - `goal`: [`Goal`], [`PlanOptions`]: what a host needs for a goal (profile, boot entry,
//!   running system, specialisation).
//! - `plan`: [`plan`], [`Plan`], [`HostPlan`], [`Action`], the JSON format.
//! - `decide`: what apply does with each planned host ([`decide`], [`Decision`]) and how its
//!   paths travel ([`CopyRoute`]).
//! - `estimate`: the bytes apply expects to send to a host ([`Expected`]).
//! - `diff`: closure diffs from store path names ([`Diff`]).
//! - `errors`: why a host has no desired system or no facts ([`DesiredError`], [`FactsError`]).
//! - `drift`: saved plans against the host's state now ([`check_still_valid`], [`Drift`]).
//! - `relay`: which hosts' copies go through a relay ([`assign_relays`], docs/relay.md).
//! - `render`: the human view ([`render`], [`RenderOptions`]).

mod decide;
mod diff;
mod drift;
mod errors;
mod estimate;
mod flake;
mod goal;
mod input;
mod plan;
mod platform;
mod relay;
mod render;
mod secrets;

pub use decide::{
    copy_route, decide, ApplyPolicy, CopyRoute, Decision, HostPolicy, RebootWhen, RouteFacts, Steps,
};
pub use diff::{diff_closures, Change, Diff, Pkg};
pub use drift::{check_still_valid, Drift};
pub use errors::{DesiredError, FactsError};
pub use estimate::{expected, Expected, COMPRESSED_RATIO, PATCH_OVERHEAD, PATCH_RATIO};
pub use flake::{flake_plan, FlakeLock, FlakePlan, InputChange, LockedInput};
pub use goal::{Goal, PlanOptions, SpecialisationChoice};
pub use input::{ClosurePath, DesiredHost, HostFacts, HostInput, RemoteState, Specialisation};
pub use plan::{plan, Action, Copy, Counts, HostPlan, Plan, PlanFileError, Substitute, FORMAT};
pub use relay::{assign_relays, relay_for};
pub use render::{human_size, render, RenderOptions};
pub use secrets::{SecretChange, SecretPlan};

// The vocabulary of this crate's API (fleet-types), for callers that name only the planner.
pub use fleet_types::{reboot_parts, short_path, BootPart, BootSpec};
