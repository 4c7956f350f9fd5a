//! fleet-planner: the pure core of `fleet plan` and `fleet apply`.
//!
//! Given per host the desired system (evaluated and built locally, or why that failed) and the
//! facts read from the host (or why it could not be reached), [`plan`] decides per host what apply
//! will do: `install`, `update`, `unchanged` or `error`, which store paths to copy, a package diff
//! of the closures and whether a reboot is needed. The [`Plan`] is plain serde data: rendered for
//! humans with [`render`], saved as JSON with [`Plan::to_json`] and read back with
//! [`Plan::from_json`]; [`check_still_valid`] tells apply whether a host drifted since.
//!
//! No I/O, no async, no printing. Host names and store paths are plain strings; the CLI maps its
//! own types into [`HostInput`]. See `docs/plan.md` for the rules and the JSON format.
//!
//! # Layout
//! - `input`: what the planner is given ([`HostInput`], [`DesiredHost`], [`RemoteState`]).
//! - `goal`: [`Goal`], [`PlanOptions`]: what a host needs for a goal (profile, boot entry,
//!   running system, specialisation).
//! - `plan`: [`plan`], [`Plan`], [`HostPlan`], [`Action`], the JSON format.
//! - `decide`: what apply does with each planned host ([`decide`], [`Decision`]) and how its
//!   paths travel ([`CopyRoute`]).
//! - `diff`: closure diffs from store path names ([`Diff`]).
//! - `store_name`: Nix's `DrvName` rule, output suffixes, short store paths.
//! - `drift`: saved plans against the host's state now ([`check_still_valid`], [`Drift`]).
//! - `render`: the human view ([`render`], [`RenderOptions`]).

mod decide;
mod diff;
mod drift;
mod flake;
mod goal;
mod input;
mod plan;
mod platform;
mod render;
mod secrets;
mod store_name;

pub use decide::{
    copy_route, decide, ApplyPolicy, CopyRoute, Decision, HostPolicy, RebootWhen, RouteFacts, Steps,
};
pub use diff::{diff_closures, Change, Diff, Pkg};
pub use drift::{check_still_valid, Drift};
pub use flake::{flake_plan, FlakeLock, FlakePlan, InputChange, LockedInput};
pub use goal::{Goal, PlanOptions, SpecialisationChoice};
pub use input::{
    BootSpec, ClosurePath, DesiredHost, HostFacts, HostInput, RemoteState, Specialisation,
};
pub use plan::{
    plan, reboot_parts, Action, BootPart, Copy, Counts, HostPlan, Plan, PlanFileError, Substitute,
    FORMAT,
};
pub use render::{human_size, render, RenderOptions};
pub use secrets::{SecretChange, SecretPlan};
pub use store_name::short_path;
