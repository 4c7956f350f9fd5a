//! Exit codes of `fleet`, documented in docs/cli.md. Scripts may rely on them.

/// Everything worked (or nothing needed doing).
pub const OK: u8 = 0;
/// At least one host failed, or a runtime error stopped fleet.
pub const FAILURE: u8 = 1;
/// The question "Apply to N hosts?" (or "Roll back N hosts?") was not answered yes:
/// nothing was changed.
pub const DECLINED: u8 = 1;
/// The command line or fleet.toml is wrong (clap also exits 2 for usage errors).
pub const USAGE: u8 = 2;
/// A saved plan no longer matches the hosts; make a new plan.
pub const PLAN_OUT_OF_DATE: u8 = 3;
/// Interrupted by Ctrl-C (128 + SIGINT).
pub const INTERRUPTED: u8 = 130;
