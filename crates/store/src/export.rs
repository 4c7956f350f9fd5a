//! The export format (input of `nix-store --import` and serve ImportPaths): per path `u64 1`,
//! the NAR, `u64 0x4558494e`, path, references, deriver, `u64 0`; then `u64 0`.
//!
//! This is the one-way bulk transport: `[zstd -dc |] nix-store --import` needs no replies, and
//! can be compressed. Trade-off: the importer holds each NAR in RAM while importing it.

use std::io::{self, Write};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::nar;
use crate::serve::NarMsg;
use crate::source::NarSource;
use crate::wire::{put_bytes, put_strings, put_u64};
use crate::{Error, PathInfo, Result};

const EXPORT_MAGIC: u64 = 0x4558_494e;

pub(crate) fn trailer(info: &PathInfo) -> Vec<u8> {
    let mut b = Vec::new();
    put_u64(&mut b, EXPORT_MAGIC);
    put_bytes(&mut b, info.path.as_str().as_bytes());
    put_strings(&mut b, info.references.iter().map(|p| p.as_str()));
    put_bytes(
        &mut b,
        info.deriver.as_ref().map_or("", |d| d.as_str()).as_bytes(),
    );
    put_u64(&mut b, 0);
    b
}

/// Write the export stream of `infos` (dependency order) read from `store` to `w`, synchronously.
/// Returns the number of bytes written.
pub fn write_export<W: Write, S: NarSource>(
    mut w: W,
    infos: &[PathInfo],
    store: &S,
) -> Result<u64> {
    let io = |e: io::Error| Error::Io {
        host: "export".into(),
        during: "writing the export stream".into(),
        source: e,
    };
    let mut n = 0u64;
    for info in infos {
        w.write_all(&1u64.to_le_bytes()).map_err(io)?;
        let file = store.real_path(&info.path);
        let size = nar::dump(&file, &mut w).map_err(|e| Error::NarSource {
            path: info.path.clone(),
            file,
            source: e,
        })?;
        let t = trailer(info);
        w.write_all(&t).map_err(io)?;
        n += 8 + size + t.len() as u64;
    }
    w.write_all(&0u64.to_le_bytes()).map_err(io)?;
    w.flush().map_err(io)?;
    Ok(n + 8)
}

/// Async export writer fed by a [`NarMsg`] stream (e.g. one [`crate::copy::fan_out`]
/// destination), optionally zstd-compressed at `zstd_level` (for `zstd -dc | nix-store
/// --import`). On a source failure the stream is cut short, so `nix-store --import` fails
/// without registering the partial path. Returns (paths, bytes written to `w`).
pub async fn write_export_stream<W: AsyncWrite + Unpin>(
    rx: mpsc::Receiver<NarMsg>,
    w: W,
    zstd_level: Option<i32>,
    host: &str,
) -> Result<(usize, u64)> {
    write_export_part(rx, w, zstd_level, host, true).await
}

/// The end of an export stream written in parts: `u64 0`, as a zstd frame of its own when
/// `zstd_level` is given.
pub fn export_end(zstd_level: Option<i32>) -> Vec<u8> {
    let end = 0u64.to_le_bytes();
    match zstd_level {
        Some(l) => zstd::bulk::compress(&end, l).expect("compressing 8 bytes in memory"),
        None => end.to_vec(),
    }
}

/// One part of an export stream: the entries of `rx`, and when `last`, the end marker and a
/// shutdown of `w` (that is [`write_export_stream`]). A part that is not the last ends without
/// the marker, as a complete zstd frame when compressed, and leaves `w` open: parts written
/// one after the other (each in dependency order, references in earlier parts or the same
/// one), then [`export_end`], make one stream for `[zstd -dc |] nix-store --import` (zstd
/// decompresses concatenated frames). So one compressed part can be broadcast to every host
/// that lacks its paths while each host's stream holds exactly the parts it needs.
pub async fn write_export_part<W: AsyncWrite + Unpin>(
    mut rx: mpsc::Receiver<NarMsg>,
    mut w: W,
    zstd_level: Option<i32>,
    host: &str,
    last: bool,
) -> Result<(usize, u64)> {
    let io = |e: io::Error| Error::Io {
        host: host.into(),
        during: "writing the export stream".into(),
        source: e,
    };
    let mut enc = match zstd_level {
        Some(l) => Some(zstd::stream::write::Encoder::new(Vec::new(), l).map_err(io)?),
        None => None,
    };
    let mut out_bytes = 0u64;
    let mut paths = 0usize;
    let mut current = None;
    // Pass raw bytes through the (optional) compressor to `w`.
    async fn emit<W: AsyncWrite + Unpin>(
        w: &mut W,
        enc: &mut Option<zstd::stream::write::Encoder<'static, Vec<u8>>>,
        data: &[u8],
        out: &mut u64,
    ) -> io::Result<()> {
        match enc {
            Some(e) => {
                e.write_all(data)?;
                let buf = e.get_mut();
                if buf.len() >= 64 * 1024 {
                    w.write_all(buf).await?;
                    *out += buf.len() as u64;
                    buf.clear();
                }
                Ok(())
            }
            None => {
                *out += data.len() as u64;
                w.write_all(data).await
            }
        }
    }
    let res: Result<()> = async {
        while let Some(msg) = rx.recv().await {
            match msg {
                NarMsg::Start(info) => {
                    emit(&mut w, &mut enc, &1u64.to_le_bytes(), &mut out_bytes)
                        .await
                        .map_err(io)?;
                    current = Some((info, 0u64));
                }
                NarMsg::Chunk(b) => {
                    if let Some((_, n)) = current.as_mut() {
                        *n += b.len() as u64;
                    }
                    emit(&mut w, &mut enc, &b, &mut out_bytes)
                        .await
                        .map_err(io)?;
                }
                NarMsg::End => {
                    if let Some((info, n)) = current.take() {
                        if n != info.nar_size {
                            return Err(Error::NarSizeMismatch {
                                host: host.into(),
                                path: info.path.clone(),
                                want: info.nar_size,
                                got: n,
                            });
                        }
                        emit(&mut w, &mut enc, &trailer(&info), &mut out_bytes)
                            .await
                            .map_err(io)?;
                        paths += 1;
                    }
                }
                NarMsg::Fail(e) => return Err(e),
            }
        }
        if let Some((info, _)) = current {
            return Err(Error::CopyFailed {
                host: host.into(),
                path: info.path.clone(),
                acknowledged: paths,
                source: Box::new(Error::Cancelled { host: host.into() }),
            });
        }
        if last {
            emit(&mut w, &mut enc, &0u64.to_le_bytes(), &mut out_bytes)
                .await
                .map_err(io)?;
        }
        if let Some(e) = enc.take() {
            let buf = e.finish().map_err(io)?;
            w.write_all(&buf).await.map_err(io)?;
            out_bytes += buf.len() as u64;
        }
        w.flush().await.map_err(io)?;
        if last {
            w.shutdown().await.map_err(io)?;
        }
        Ok(())
    }
    .await;
    match res {
        Ok(()) => Ok((paths, out_bytes)),
        Err(e) => {
            // Cut the stream short *without* a valid end: the importer fails, nothing partial.
            // (A compressed stream is cut without its final frame.)
            let _ = w.shutdown().await;
            Err(e)
        }
    }
}
