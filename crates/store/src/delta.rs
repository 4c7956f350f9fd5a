//! Deltas: a path a host lacks travels as a zstd patch against a path of the same package the
//! host already has (`zstd --patch-from`: the old path's file contents are the dictionary,
//! [`dictionary`], with long-range matching), when that patch is much smaller than the path.
//! After a nixpkgs bump nearly every store path gets a new hash, but most files differ only
//! where store paths are embedded, so the patches are tiny (a 200 KB library: 281 bytes against
//! 42 KB for plain `zstd -3`).
//!
//! The host rebuilds the NAR from its own copy of the old path (the same dictionary), checks it
//! against the NAR hash the deployer's store records, and only then imports it; a patch that
//! does not rebuild the exact NAR never becomes a valid path (the executor's host script).
//!
//! What goes to the host is a **bundle**: one tar archive (compressed as a whole with zstd)
//! holding a `manifest` (one line per path, in import order: `delta|full INDEX PATH BASE
//! SHA256HEX`), per path its export trailer (`INDEX.trailer`: the part of `nix-store --export`'s
//! format after the NAR) and either its patch (`INDEX.patch`) or, for paths without a good base,
//! its NAR (`INDEX.nar`). Paths without a base travel in the same bundle so that every path is
//! imported after its references.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::export::trailer;
use crate::path::nix32_decode;
use crate::{nar, Error, PathInfo, Result, StorePath};

/// A patch is used only when it is at most this fraction of the NAR (a full NAR compresses to
/// about a third; below a quarter the patch wins clearly).
pub const MAX_PATCH_RATIO: f64 = 0.25;

/// Bases larger than this are not used: the host holds the old NAR on disk and zstd keeps a
/// window of its size in memory while rebuilding.
pub const MAX_BASE_NAR: u64 = 512 << 20;

/// For each missing path (by index into `missing`), a path the host has that can serve as its
/// base: the same name (`htop-3.3.0` for `htop-3.3.0`), else the same package (`htop-3.3.1`
/// for `htop-3.3.0`: name without the version), never a path the host lacks. `has` is what the
/// host holds (its current system's closure); when several match, the first in `has` wins.
pub fn pair(missing: &[StorePath], has: &[StorePath]) -> BTreeMap<usize, StorePath> {
    let mut by_name: BTreeMap<&str, &StorePath> = BTreeMap::new();
    let mut by_package: BTreeMap<&str, &StorePath> = BTreeMap::new();
    for p in has {
        by_name.entry(p.name()).or_insert(p);
        let (package, _) = p.name_version();
        by_package.entry(package).or_insert(p);
    }
    missing
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let base = by_name
                .get(m.name())
                .or_else(|| by_package.get(m.name_version().0))?;
            (*base != m).then(|| (i, (*base).clone()))
        })
        .collect()
}

/// The dictionary a patch is made against: the contents of `base`'s regular files, one after
/// the other, in the order of their paths (`./a/b`, bytewise), as the host makes it without a
/// Nix process per path: `cd BASE && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 cat`
/// (a store path that is one file: its contents). Symlinks are left out, as `find -type f`
/// does. The patch only needs the same bytes on both sides, not a NAR: `nix-store --dump`,
/// which this replaced, cost the host ~28 ms of CPU per path, most of a delta's cost there.
pub fn dictionary<W: Write>(base: &Path, mut w: W) -> io::Result<u64> {
    let meta = std::fs::symlink_metadata(base)?;
    if meta.is_file() {
        return io::copy(&mut std::fs::File::open(base)?, &mut w);
    }
    let mut files: Vec<(Vec<u8>, PathBuf)> = Vec::new();
    let mut dirs = vec![(b".".to_vec(), base.to_path_buf())];
    while let Some((rel, dir)) = dirs.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let mut r = rel.clone();
            r.push(b'/');
            r.extend_from_slice(e.file_name().as_encoded_bytes());
            let t = e.file_type()?;
            if t.is_dir() {
                dirs.push((r, e.path()));
            } else if t.is_file() {
                files.push((r, e.path()));
            }
        }
    }
    files.sort();
    let mut n = 0;
    for (_, f) in files {
        n += io::copy(&mut std::fs::File::open(f)?, &mut w)?;
    }
    w.flush()?;
    Ok(n)
}

/// The zstd patch of `new`'s NAR against `base`'s [`dictionary`] (both read from the local
/// store through `real_path`), made by the `zstd` program with `--patch-from` in `tmp`.
pub async fn patch(
    real_path: impl Fn(&StorePath) -> PathBuf,
    base: &StorePath,
    new: &StorePath,
    tmp: &Path,
) -> Result<Vec<u8>> {
    let io = |during: &str, e: io::Error| Error::Io {
        host: "delta".into(),
        during: during.into(),
        source: e,
    };
    let base_nar = tmp.join(format!("{}.dict", base.hash_part()));
    let new_nar = tmp.join(format!("{}.nar", new.hash_part()));
    for (p, file) in [(base, &base_nar), (new, &new_nar)] {
        let src = real_path(p);
        let f = std::fs::File::create(file).map_err(|e| io("writing a NAR for a patch", e))?;
        let w = io::BufWriter::new(f);
        let written = if p == base {
            dictionary(&src, w)
        } else {
            nar::dump(&src, w)
        };
        match written {
            Ok(0) if p == base => {
                let _ = std::fs::remove_file(&base_nar);
                return Err(io(
                    "making a patch",
                    io::Error::other("the base has no regular files"),
                ));
            }
            Ok(_) => {}
            Err(e) => {
                let _ = std::fs::remove_file(&base_nar);
                let _ = std::fs::remove_file(&new_nar);
                return Err(Error::NarSource {
                    path: p.clone(),
                    file: src,
                    source: e,
                });
            }
        }
    }
    let out = tokio::process::Command::new("zstd")
        .arg("-q")
        .arg("-c")
        .arg("-3")
        .arg(format!("--patch-from={}", base_nar.display()))
        .arg(&new_nar)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| io("running zstd --patch-from", e))?;
    let _ = std::fs::remove_file(&base_nar);
    let _ = std::fs::remove_file(&new_nar);
    if !out.status.success() {
        return Err(Error::Io {
            host: "delta".into(),
            during: format!(
                "zstd --patch-from ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            source: io::Error::other("zstd failed"),
        });
    }
    Ok(out.stdout)
}

/// One path of a bundle.
#[derive(Debug, Clone)]
pub enum Entry {
    /// Its NAR, whole.
    Full(PathInfo),
    /// A patch against `base`, a path the host has.
    Delta {
        info: PathInfo,
        base: StorePath,
        patch: Vec<u8>,
    },
}

impl Entry {
    pub fn info(&self) -> &PathInfo {
        match self {
            Entry::Full(i) | Entry::Delta { info: i, .. } => i,
        }
    }
}

/// The NAR hash of `info` in hex (what `sha256sum` prints), from its `sha256:<nix32>`.
pub fn nar_hash_hex(info: &PathInfo) -> Option<String> {
    let nix32 = info.nar_hash.strip_prefix("sha256:")?;
    let bytes = nix32_decode(nix32, 32)?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The manifest of a bundle: one line per entry, in order.
pub fn manifest(entries: &[Entry]) -> Result<String> {
    let mut m = String::new();
    for (i, e) in entries.iter().enumerate() {
        let info = e.info();
        let hex = nar_hash_hex(info).ok_or_else(|| Error::Io {
            host: "delta".into(),
            during: format!("reading the NAR hash of {} ({})", info.path, info.nar_hash),
            source: io::Error::other("not a sha256 in nix32"),
        })?;
        let (kind, base) = match e {
            Entry::Full(_) => ("full", "-"),
            Entry::Delta { base, .. } => ("delta", base.as_str()),
        };
        m.push_str(&format!("{kind} {i} {} {base} {hex}\n", info.path));
    }
    Ok(m)
}

/// Write `entries` (import order: references first) as a bundle: a tar archive, compressed
/// with zstd at `level`. NARs are read from the local store through `real_path` while
/// writing. Returns the bytes written to `w`.
pub fn write_bundle<W: Write>(
    w: W,
    entries: &[Entry],
    real_path: impl Fn(&StorePath) -> PathBuf,
    level: i32,
) -> Result<u64> {
    let io = |e: io::Error| Error::Io {
        host: "delta".into(),
        during: "writing a delta bundle".into(),
        source: e,
    };
    let mut counted = CountingWriter { inner: w, n: 0 };
    let mut z = zstd::stream::write::Encoder::new(&mut counted, level).map_err(io)?;
    let file = |z: &mut dyn Write, name: &str, data: &[u8]| -> io::Result<()> {
        tar_header(z, name, data.len() as u64)?;
        z.write_all(data)?;
        tar_pad(z, data.len() as u64)
    };
    file(&mut z, "manifest", manifest(entries)?.as_bytes()).map_err(io)?;
    for (i, e) in entries.iter().enumerate() {
        let info = e.info();
        file(&mut z, &format!("{i}.trailer"), &trailer(info)).map_err(io)?;
        match e {
            Entry::Delta { patch, .. } => file(&mut z, &format!("{i}.patch"), patch).map_err(io)?,
            Entry::Full(info) => {
                tar_header(&mut z, &format!("{i}.nar"), info.nar_size).map_err(io)?;
                let src = real_path(&info.path);
                let n = nar::dump(&src, &mut z).map_err(|e| Error::NarSource {
                    path: info.path.clone(),
                    file: src.clone(),
                    source: e,
                })?;
                if n != info.nar_size {
                    return Err(Error::NarSource {
                        path: info.path.clone(),
                        file: src,
                        source: io::Error::other(format!(
                            "its NAR is {n} bytes, the store says {}",
                            info.nar_size
                        )),
                    });
                }
                tar_pad(&mut z, n).map_err(io)?;
            }
        }
    }
    // The end of a tar archive: two zero blocks.
    z.write_all(&[0u8; 1024]).map_err(io)?;
    z.finish().map_err(io)?;
    counted.flush().map_err(io)?;
    Ok(counted.n)
}

struct CountingWriter<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A ustar header for a regular file `name` (short, ASCII) of `size` bytes.
fn tar_header(w: &mut dyn Write, name: &str, size: u64) -> io::Result<()> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |field: &mut [u8], v: u64| {
        let s = format!("{v:0width$o}", width = field.len() - 1);
        field[..s.len()].copy_from_slice(s.as_bytes());
    };
    octal(&mut h[100..108], 0o600);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 0);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    w.write_all(&h)
}

fn tar_pad(w: &mut dyn Write, size: u64) -> io::Result<()> {
    let pad = (512 - size % 512) % 512;
    w.write_all(&[0u8; 512][..pad as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(hash: char, name: &str) -> StorePath {
        StorePath::new(format!(
            "/nix/store/{}-{name}",
            std::iter::repeat_n(hash, 32).collect::<String>()
        ))
        .unwrap()
    }

    #[test]
    fn bases_are_the_same_name_else_the_same_package() {
        let has = [
            p('a', "htop-3.3.0"),
            p('b', "openssl-3.0.13"),
            p('c', "openssl-3.0.13-bin"),
            p('d', "etc"),
        ];
        let missing = [
            p('f', "htop-3.3.0"),
            p('g', "openssl-3.0.14"),
            p('h', "etc"),
            p('i', "jq-1.7"),
            p('a', "htop-3.3.0"),
        ];
        let pairs = pair(&missing, &has);
        assert_eq!(pairs.get(&0), Some(&has[0]));
        assert_eq!(pairs.get(&1), Some(&has[1]), "same package, other version");
        assert_eq!(pairs.get(&2), Some(&has[3]));
        assert_eq!(pairs.get(&3), None, "no jq on the host");
        assert_eq!(pairs.get(&4), None, "a path is never its own base");
    }

    #[test]
    fn the_bundle_is_a_tar_that_tar_reads() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"hello").unwrap();
        let (hash, size) = nar::nar_hash(&file).unwrap();
        let info = PathInfo {
            path: p('a', "hello"),
            deriver: None,
            nar_hash: hash,
            nar_size: size,
            references: Default::default(),
            sigs: Vec::new(),
            ca: None,
        };
        let entries = [
            Entry::Full(info.clone()),
            Entry::Delta {
                info: PathInfo {
                    path: p('b', "hello"),
                    ..info.clone()
                },
                base: info.path.clone(),
                patch: b"PATCH".to_vec(),
            },
        ];
        let mut out = Vec::new();
        write_bundle(&mut out, &entries, |_| file.clone(), 3).unwrap();
        let tar = zstd::stream::decode_all(&out[..]).unwrap();
        let x = dir.path().join("x");
        std::fs::create_dir(&x).unwrap();
        let mut child = std::process::Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(&x)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&tar).unwrap();
        assert!(child.wait().unwrap().success());
        let manifest = std::fs::read_to_string(x.join("manifest")).unwrap();
        let hex = nar_hash_hex(&info).unwrap();
        assert_eq!(
            manifest,
            format!(
                "full 0 {} - {hex}\ndelta 1 {} {} {hex}\n",
                info.path,
                p('b', "hello"),
                info.path
            )
        );
        let mut nar_bytes = Vec::new();
        nar::dump(&file, &mut nar_bytes).unwrap();
        assert_eq!(std::fs::read(x.join("0.nar")).unwrap(), nar_bytes);
        assert_eq!(std::fs::read(x.join("1.patch")).unwrap(), b"PATCH");
        assert_eq!(
            std::fs::read(x.join("1.trailer")).unwrap(),
            trailer(&entries[1].info().clone())
        );
        // sha256sum agrees with the hex of the NAR hash.
        let sum = std::process::Command::new("sha256sum")
            .arg(x.join("0.nar"))
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&sum.stdout).starts_with(&hex));
    }

    /// The deployer's dictionary is byte for byte what the host script's pipeline makes.
    #[test]
    fn the_dictionary_is_what_find_sort_cat_makes() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path().join("base");
        for (f, body) in [
            ("a/x", "ax"),
            ("a-b", "a-b"),
            ("a.c", "a.c"),
            ("a/y/z", "ayz"),
            ("B", "B"),
            ("lib/libfoo.so.1", "elf"),
        ] {
            let p = b.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        std::os::unix::fs::symlink("a-b", b.join("link")).unwrap();
        std::fs::create_dir_all(b.join("empty")).unwrap();
        let mut ours = Vec::new();
        dictionary(&b, &mut ours).unwrap();
        let host = std::process::Command::new("sh")
            .arg("-c")
            .arg("cd \"$1\" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r cat")
            .arg("sh")
            .arg(&b)
            .output()
            .unwrap();
        assert!(host.status.success());
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&host.stdout)
        );
        // "./a-b" < "./a.c" < "./a/x": bytewise on the whole path, not per level.
        assert_eq!(String::from_utf8_lossy(&ours), "Ba-ba.caxayzelf");
        // A store path that is one file: its contents.
        let mut one = Vec::new();
        dictionary(&b.join("B"), &mut one).unwrap();
        assert_eq!(one, b"B");
    }

    #[tokio::test]
    async fn a_patch_rebuilds_the_new_nar_from_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        // Two "store paths" that differ only where a store path is embedded.
        let (old, new) = (dir.path().join("old"), dir.path().join("new"));
        let body: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i * 7919).to_le_bytes())
            .collect();
        let mut a = body.clone();
        a[1000..1032].copy_from_slice(&[b'a'; 32]);
        let mut b = body;
        b[1000..1032].copy_from_slice(&[b'b'; 32]);
        std::fs::write(&old, &a).unwrap();
        std::fs::write(&new, &b).unwrap();
        let (base, target) = (p('a', "lib"), p('b', "lib"));
        let real = |s: &StorePath| if *s == base { old.clone() } else { new.clone() };
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let patch = patch(real, &base, &target, &tmp).await.unwrap();
        assert!(patch.len() < 2_000, "{} bytes for 800 KB", patch.len());
        // The host's side: zstd -d --patch-from=DICTIONARY of the old path.
        let old_nar = dir.path().join("old.dict");
        dictionary(&old, std::fs::File::create(&old_nar).unwrap()).unwrap();
        std::fs::write(dir.path().join("p"), &patch).unwrap();
        let out = std::process::Command::new("zstd")
            .args(["-q", "-d", "-c", "--long=31"])
            .arg(format!("--patch-from={}", old_nar.display()))
            .arg(dir.path().join("p"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut want = Vec::new();
        nar::dump(&new, &mut want).unwrap();
        assert!(out.stdout == want, "the rebuilt NAR is the new one");
        assert!(
            tmp.read_dir().unwrap().next().is_none(),
            "temporary NARs removed"
        );
    }
}
