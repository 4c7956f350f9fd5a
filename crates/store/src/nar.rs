//! NAR serialisation, byte-identical to `nix-store --dump`.
//!
//! Files are streamed (length from the metadata, then the contents copied in blocks), so memory
//! use does not depend on file size. Directory entries are sorted by raw byte order.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::path::nix32_encode;

const ZEROS: [u8; 8] = [0; 8];

/// A writer that counts bytes.
struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Counting<W> {
    fn str(&mut self, b: &[u8]) -> io::Result<()> {
        self.inner.write_all(&(b.len() as u64).to_le_bytes())?;
        self.inner.write_all(b)?;
        self.inner
            .write_all(&ZEROS[..crate::wire::padding(b.len() as u64)])?;
        self.n += 8 + b.len() as u64 + crate::wire::padding(b.len() as u64) as u64;
        Ok(())
    }
    fn strs(&mut self, list: &[&[u8]]) -> io::Result<()> {
        list.iter().try_for_each(|s| self.str(s))
    }
}

/// Write the NAR of `path` (a file, executable, symlink or directory) to `w`. Returns the NAR
/// size in bytes.
pub fn dump<W: Write>(path: &Path, w: W) -> io::Result<u64> {
    let mut c = Counting { inner: w, n: 0 };
    c.str(b"nix-archive-1")?;
    dump_node(path, &mut c)?;
    c.inner.flush()?;
    Ok(c.n)
}

fn dump_node<W: Write>(path: &Path, c: &mut Counting<W>) -> io::Result<()> {
    let md = fs::symlink_metadata(path)?;
    let ft = md.file_type();
    c.strs(&[b"(", b"type"])?;
    if ft.is_file() {
        c.str(b"regular")?;
        if md.permissions().mode() & 0o100 != 0 {
            c.strs(&[b"executable", b""])?;
        }
        c.str(b"contents")?;
        let len = md.len();
        c.inner.write_all(&len.to_le_bytes())?;
        let f = fs::File::open(path)?;
        let copied = io::copy(&mut f.take(len), &mut c.inner)?;
        if copied != len {
            return Err(io::Error::other(format!(
                "{} shrank while being read ({copied} of {len} bytes)",
                path.display()
            )));
        }
        let pad = crate::wire::padding(len);
        c.inner.write_all(&ZEROS[..pad])?;
        c.n += 8 + len + pad as u64;
    } else if ft.is_symlink() {
        let target = fs::read_link(path)?;
        c.strs(&[b"symlink", b"target", target.as_os_str().as_bytes()])?;
    } else if ft.is_dir() {
        c.str(b"directory")?;
        let mut names: Vec<std::ffi::OsString> = fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            c.strs(&[b"entry", b"(", b"name", name.as_bytes(), b"node"])?;
            dump_node(&path.join(&name), c)?;
            c.str(b")")?;
        }
    } else {
        return Err(io::Error::other(format!(
            "{}: unsupported file type for a NAR",
            path.display()
        )));
    }
    c.str(b")")
}

/// A `Write` that hashes and counts.
struct HashWriter(Sha256, u64);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        self.1 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `sha256:<nix32>` of the NAR of `path`, and the NAR size (what `nix-store -q --hash --size`
/// report).
pub fn nar_hash(path: &Path) -> io::Result<(String, u64)> {
    let mut h = HashWriter(Sha256::new(), 0);
    dump(path, io::BufWriter::with_capacity(64 * 1024, &mut h))?;
    Ok((format!("sha256:{}", nix32_encode(&h.0.finalize())), h.1))
}

/// `sha256:<nix32>` of some bytes.
pub fn sha256_nix32(bytes: &[u8]) -> String {
    format!("sha256:{}", nix32_encode(&Sha256::digest(bytes)))
}

/// A `Write` that cuts the stream into `Bytes` chunks and sends them on a bounded channel
/// (blocking the dumping thread when the channel is full).
struct ChunkSender {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    chunk: usize,
}

impl ChunkSender {
    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let b = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(self.chunk),
        ));
        self.tx
            .blocking_send(Ok(b))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "NAR consumer went away"))
    }
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.chunk - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= self.chunk {
            self.send_buf()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send_buf()
    }
}

/// Default chunk size of [`dump_chunks`].
pub const CHUNK_SIZE: usize = 64 * 1024;

/// Async-friendly dump: runs [`dump`] on the blocking pool and yields the NAR as chunks of
/// `chunk_size` bytes through a channel holding at most `capacity` chunks (so memory is bounded
/// by `chunk_size * (capacity + 1)`). A read error arrives as the last item. Must be called
/// inside a tokio runtime.
pub fn dump_chunks(
    path: PathBuf,
    chunk_size: usize,
    capacity: usize,
) -> mpsc::Receiver<io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    tokio::task::spawn_blocking(move || {
        let mut w = ChunkSender {
            tx: tx.clone(),
            buf: Vec::with_capacity(chunk_size),
            chunk: chunk_size.max(1),
        };
        if let Err(e) = dump(&path, &mut w) {
            if e.kind() != io::ErrorKind::BrokenPipe {
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    rx
}
