//! Stat fingerprints of the files a source holds, so that an unchanged source is not put in the
//! store again (which makes Nix read and hash every file) when the store path it got last time
//! is still valid.
//!
//! A file's fingerprint is what git's index keeps: its type and mode, size, inode and device,
//! and its modification and change times in nanoseconds. Any write, rename over, `chmod` or
//! `touch` changes the change time (`ctime`), which no program can set back, so equal
//! fingerprints mean unchanged files, with git's one exception: a file changed within the
//! timestamp granularity of the moment it was fingerprinted can change again without changing
//! its times. Like git's "racy" rule, a fingerprint that holds a file whose modification or
//! change time is not at least a whole second before the moment it was taken is **racy**: it
//! is never recorded, so that source is put in the store (hashed) again next time.

use std::os::unix::fs::MetadataExt;
use std::time::{SystemTime, UNIX_EPOCH};

use camino::Utf8Path;
use sha2::{Digest, Sha256};

/// A source's fingerprint: a key for the cache, and whether it may be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub key: String,
    /// A file changed too recently to trust its times (see the module's documentation).
    pub racy: bool,
}

/// Builds a fingerprint: the source's description, then its files.
pub(crate) struct Builder {
    hash: Sha256,
    /// Whole seconds since the epoch; a file changed at or after this second is racy.
    racy_from: i64,
    racy: bool,
}

impl Builder {
    /// A fingerprint taken `now` of the source `what` (its kind, name, where it is).
    pub fn new(what: &[&str], now: SystemTime) -> Builder {
        let secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(i64::MAX);
        let mut b = Builder {
            hash: Sha256::new(),
            // The same second, and one more: file times come from the kernel's coarse clock,
            // which may lag behind the clock read here by a tick.
            racy_from: secs.saturating_sub(1),
            racy: false,
        };
        b.field(b"fleet-source-fingerprint-1");
        for w in what {
            b.field(w.as_bytes());
        }
        b
    }

    fn field(&mut self, bytes: &[u8]) {
        self.hash.update((bytes.len() as u64).to_le_bytes());
        self.hash.update(bytes);
    }

    /// One file, folder or link of the source (`rel`: its path in the source). A path that
    /// cannot be read is recorded as missing (a later file there changes the fingerprint).
    pub fn entry(&mut self, path: &Utf8Path, rel: &str) {
        self.field(rel.as_bytes());
        match std::fs::symlink_metadata(path) {
            Err(_) => self.field(b"missing"),
            Ok(m) => {
                for n in [
                    u64::from(m.mode()),
                    m.size(),
                    m.ino(),
                    m.dev(),
                    m.mtime() as u64,
                    m.mtime_nsec() as u64,
                    m.ctime() as u64,
                    m.ctime_nsec() as u64,
                ] {
                    self.hash.update(n.to_le_bytes());
                }
                if m.mtime() >= self.racy_from || m.ctime() >= self.racy_from {
                    self.racy = true;
                }
            }
        }
    }

    pub fn finish(self) -> Fingerprint {
        Fingerprint {
            key: self
                .hash
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            racy: self.racy,
        }
    }
}

/// Every path under `dir` (itself excluded) that `keep` accepts, not entering a rejected
/// folder and not following links, sorted; what `builtins.path` with such a filter copies.
pub(crate) fn walk(dir: &Utf8Path, keep: &dyn Fn(&str) -> bool) -> Vec<camino::Utf8PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = d.read_dir_utf8() else {
            continue;
        };
        for e in entries.flatten() {
            if !keep(e.file_name()) {
                continue;
            }
            let p = e.path().to_path_buf();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn fingerprint(dir: &Utf8Path, files: &[&str], now: SystemTime) -> Fingerprint {
        let mut b = Builder::new(&["tree", dir.as_str()], now);
        for f in files {
            b.entry(&dir.join(f), f);
        }
        b.finish()
    }

    fn set_times(path: &Utf8Path, t: SystemTime) {
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
            .unwrap();
    }

    #[test]
    fn a_file_changed_within_the_racy_window_is_never_trusted() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(tmp.path()).unwrap();
        std::fs::write(dir.join("a.nix"), "{ x = 1; }").unwrap();
        // Fingerprinted in the second it was written: racy, so never recorded; an edit that
        // keeps its size and modification time cannot then be taken for the old contents.
        let now = SystemTime::now();
        assert!(fingerprint(dir, &["a.nix"], now).racy);
        // The same moment, seen a minute later: a file last changed long before is not racy.
        let later = now + Duration::from_secs(60);
        let first = fingerprint(dir, &["a.nix"], later);
        assert!(!first.racy);
        assert_eq!(first, fingerprint(dir, &["a.nix"], later));
        // The same size, the modification time put back: the change time still moved.
        let mtime = std::fs::metadata(dir.join("a.nix"))
            .unwrap()
            .modified()
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(dir.join("a.nix"), "{ x = 2; }").unwrap();
        set_times(&dir.join("a.nix"), mtime);
        assert_eq!(
            std::fs::metadata(dir.join("a.nix"))
                .unwrap()
                .modified()
                .unwrap(),
            mtime
        );
        assert_ne!(first.key, fingerprint(dir, &["a.nix"], later).key);
    }

    #[test]
    fn new_missing_and_renamed_files_change_the_fingerprint() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(tmp.path()).unwrap();
        std::fs::write(dir.join("a.nix"), "a").unwrap();
        let later = SystemTime::now() + Duration::from_secs(60);
        let one = fingerprint(dir, &["a.nix"], later);
        assert_ne!(one, fingerprint(dir, &["a.nix", "b.nix"], later));
        std::fs::write(dir.join("b.nix"), "b").unwrap();
        let two = fingerprint(dir, &["a.nix", "b.nix"], later);
        assert_ne!(one.key, two.key);
        std::fs::remove_file(dir.join("b.nix")).unwrap();
        assert_ne!(two.key, fingerprint(dir, &["a.nix", "b.nix"], later).key);
        // Another source description (another root, name or kind): another key.
        let mut b = Builder::new(&["tree", "/elsewhere"], later);
        b.entry(&dir.join("a.nix"), "a.nix");
        assert_ne!(one.key, b.finish().key);
    }

    #[test]
    fn the_walk_skips_what_the_filter_rejects() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(tmp.path()).unwrap();
        std::fs::create_dir_all(dir.join("sub/.git")).unwrap();
        std::fs::write(dir.join("sub/.git/x"), "").unwrap();
        std::fs::write(dir.join("sub/y"), "").unwrap();
        std::fs::write(dir.join("z"), "").unwrap();
        let got: Vec<String> = walk(dir, &|n| n != ".git")
            .into_iter()
            .map(|p| p.strip_prefix(dir).unwrap().to_string())
            .collect();
        assert_eq!(got, ["sub", "sub/y", "z"]);
    }
}
