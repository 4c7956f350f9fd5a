//! fleet-store: Nix store paths, NAR serialisation, local store queries, a client for the
//! `nix-store --serve` protocol, the export stream, and the fan-out copy.
//!
//! Library only: no printing. Errors are [`Error`] values that say which host and which path.
//!
//! # Layout
//! - [`path`]: [`StorePath`], [`PathInfo`], nix32.
//! - [`wire`]: u64 / padded-string primitives and the [`wire::Limits`] on remote input.
//! - [`nar`]: `nix-store --dump`-identical NAR writer (sync, and chunked for async), NAR hash.
//! - [`local`]: the local store ([`local::LocalStore`]), batched queries, topological sort.
//! - [`serve`]: [`serve::ServeClient`] over any `AsyncRead + AsyncWrite`; pipelined AddToStoreNar.
//! - [`export`]: the `nix-store --import` stream, optionally zstd-compressed.
//! - [`copy`]: read each path once, send it to every destination that lacks it.
//! - [`source`]: [`NarSource`], where those three read a path's files from (the caller passes
//!   [`local::LocalStore`]; they do not know it).
//!
//! The protocol, transport choice and limits are documented in `docs/store-protocol.md`.

pub mod copy;
pub mod delta;
mod error;
pub mod export;
pub mod local;
pub mod nar;
pub mod path;
pub mod serve;
pub mod source;
pub mod wire;

pub use error::{Error, Result};
pub use path::{PathInfo, StorePath};
pub use source::NarSource;
