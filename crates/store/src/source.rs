//! Where a copy reads the files of a store path from, to serialise its NAR. The protocol
//! client ([`crate::serve`]), the fan-out copy ([`crate::copy`]) and the export stream
//! ([`crate::export`]) know only this trait; the local store ([`crate::local::LocalStore`],
//! also a chroot store) is one implementation, passed in by the caller.

use std::path::PathBuf;

use crate::StorePath;

/// A source of NARs: the real file-system location of a store path's contents.
pub trait NarSource: Clone + Send + Sync + 'static {
    /// The file or directory holding `path` (for a chroot store, under its root).
    fn real_path(&self, path: &StorePath) -> PathBuf;
}
