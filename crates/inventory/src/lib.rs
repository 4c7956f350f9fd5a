//! fleet-inventory: `fleet.toml` text → a typed, checked [`Inventory`], or every problem in the
//! file at once as a miette diagnostic with spans. Also host selection (`--on pi1,@pi,web-*`).
//!
//! Pure: no files, no processes, no async. The caller reads the file and passes the text, plus
//! a closure that says whether a path exists.
//!
//! # Layout
//! - [`types`]: the data ([`Inventory`], [`Host`], [`Pin`], [`HostName`], [`System`], ...).
//! - `parse`: the checker that walks the TOML tree ([`parse`], [`ParseOptions`]); its parts: `host`
//!   (`[hosts.NAME]`, `[defaults]`), `pin` (`[pins.NAME]`), `source` (`flake` or pin + config),
//!   `values` (single values), `health`, `nix_path`, `secrets`, `build` (`[build]`: remote
//!   builders, Nix's machine lines; and `substitute`).
//! - `checks`: shape checks for single values (host keys, hashes, "did you mean").
//! - `select`: `--on` selectors ([`Inventory::select`]).
//! - [`error`]: [`InventoryError`], [`Problem`], [`SelectError`].
//!
//! The format itself is documented in `docs/fleet-toml.md`.

mod checks;
pub mod error;
mod parse;
mod select;
pub mod types;

pub use error::{InventoryError, Problem, SelectError};
pub use parse::{
    host_port, http_url, parse, ParseOptions, DEFAULT_CHECK_TIMEOUT_SECS,
    DEFAULT_CONFIRM_TIMEOUT_SECS, DEFAULT_PORT, DEFAULT_SECRETS_DIR, DEFAULT_SECRET_MODE,
    DEFAULT_USER, MAX_CONFIRM_TIMEOUT_SECS,
};
pub use types::{
    BuildMode, BuildSettings, Builder, Flake, HealthChecks, Host, HostName, HostSource, Inventory,
    Pin, PinSource, Secret, SecretSource, SecretWhen, SetInFile, SudoMode, System,
};
