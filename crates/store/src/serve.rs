//! Client for the protocol of `nix-store --serve [--write]` (Nix's "legacy SSH store"), generic
//! over any `AsyncRead` + `AsyncWrite` pair: a child process's stdout/stdin, an SSH exec channel,
//! or a `tokio::io::duplex` in tests.
//!
//! The server reports errors only on stderr and then exits, so an [`Error::UnexpectedEof`] from
//! this client means "ask the transport for the remote's stderr and exit status".

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::source::NarSource;
use crate::wire::{self, put_bytes, put_strings, put_u64, Limits, WireError};
use crate::{Error, PathInfo, Result, StorePath};

pub const SERVE_MAGIC_1: u64 = 0x390c_9deb;
pub const SERVE_MAGIC_2: u64 = 0x5452_eecb;
/// The version this client announces at most (Nix 2.4 – 2.34, Lix).
pub const CLIENT_VERSION: u64 = 0x207;
/// AddToStoreNar (cmd 9) needs serve minor ≥ 5.
pub const MIN_VERSION_ADD: u64 = 0x205;

const CMD_QUERY_VALID_PATHS: u64 = 1;
const CMD_QUERY_PATH_INFOS: u64 = 2;
const CMD_QUERY_CLOSURE: u64 = 7;
const CMD_ADD_TO_STORE_NAR: u64 = 9;

/// One item of the NAR stream that [`ServeClient::add_stream`] (and the export writer) consume:
/// `Start`, then the NAR's chunks, then `End`, per path, in dependency order.
#[derive(Debug)]
pub enum NarMsg {
    Start(Arc<PathInfo>),
    Chunk(Bytes),
    End,
    /// The source failed; the consumer aborts the stream (no partial path gets registered).
    Fail(Error),
}

/// Progress of an add, per destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddEvent {
    /// The whole NAR of `path` was written to the stream (`nar_bytes` total so far).
    Sent { path: StorePath, nar_bytes: u64 },
    /// The server acknowledged `path`: it is registered. `done` paths so far.
    Acked { path: StorePath, done: usize },
}

/// Totals of a finished add.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddSummary {
    pub paths: usize,
    pub nar_bytes: u64,
}

/// A connected, handshaken serve client.
pub struct ServeClient<R, W> {
    r: BufReader<R>,
    w: W,
    host: String,
    version: u64,
    limits: Limits,
}

impl<R, W> ServeClient<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// Handshake: send the magic, read the server's version, announce `min(0x207, server)`.
    /// `host` labels errors.
    pub async fn handshake(reader: R, writer: W, host: impl Into<String>) -> Result<Self> {
        Self::handshake_with_limits(reader, writer, host, Limits::default()).await
    }

    pub async fn handshake_with_limits(
        reader: R,
        mut writer: W,
        host: impl Into<String>,
        limits: Limits,
    ) -> Result<Self> {
        let host = host.into();
        let io = |e: std::io::Error| Error::Io {
            host: host.clone(),
            during: "handshake".into(),
            source: e,
        };
        writer
            .write_all(&SERVE_MAGIC_1.to_le_bytes())
            .await
            .map_err(io)?;
        writer.flush().await.map_err(io)?;
        let mut r = BufReader::new(reader);
        let magic = wire::read_u64(&mut r)
            .await
            .map_err(|e| e.into_error(&host, "handshake"))?;
        if magic != SERVE_MAGIC_2 {
            return Err(Error::BadMagic { host, got: magic });
        }
        let server = wire::read_u64(&mut r)
            .await
            .map_err(|e| e.into_error(&host, "handshake"))?;
        if server >> 8 != 2 || server < 0x204 {
            return Err(Error::VersionTooOld {
                host,
                version: server,
                need: 0x204,
            });
        }
        let version = server.min(CLIENT_VERSION);
        writer.write_all(&version.to_le_bytes()).await.map_err(io)?;
        Ok(ServeClient {
            r,
            w: writer,
            host,
            version,
            limits,
        })
    }

    /// The negotiated protocol version.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Give back the reader and writer (e.g. to shut the writer down and collect the exit status).
    pub fn into_inner(self) -> (BufReader<R>, W) {
        (self.r, self.w)
    }

    /// Close our side; the server ends its loop at a command boundary and exits 0.
    pub async fn shutdown(&mut self) -> Result<()> {
        self.w
            .shutdown()
            .await
            .map_err(|e| self.io("closing the stream", e))
    }

    fn io(&self, during: &str, e: std::io::Error) -> Error {
        Error::Io {
            host: self.host.clone(),
            during: during.into(),
            source: e,
        }
    }

    async fn send(&mut self, buf: &[u8], during: &str) -> Result<()> {
        self.w
            .write_all(buf)
            .await
            .map_err(|e| self.io(during, e))?;
        self.w.flush().await.map_err(|e| self.io(during, e))
    }

    /// QueryValidPaths (cmd 1), one request: which of `paths` are valid on the server. `lock`
    /// adds temporary GC roots for them (lasting as long as the server process); `substitute`
    /// lets the server try its substituters first. Both need `--write`.
    pub async fn query_valid_paths(
        &mut self,
        paths: &[StorePath],
        lock: bool,
        substitute: bool,
    ) -> Result<BTreeSet<StorePath>> {
        let mut buf = Vec::new();
        put_u64(&mut buf, CMD_QUERY_VALID_PATHS);
        put_u64(&mut buf, lock as u64);
        put_u64(&mut buf, substitute as u64);
        put_strings(&mut buf, paths.iter().map(|p| p.as_str()));
        self.send(&buf, "querying valid paths").await?;
        wire::read_path_set(&mut self.r, &self.limits, "valid path set")
            .await
            .map_err(|e| e.into_error(&self.host, "querying valid paths"))
    }

    /// QueryClosure (cmd 7): the closure of `paths` on the server, in one request.
    pub async fn query_closure(
        &mut self,
        paths: &[StorePath],
        include_outputs: bool,
    ) -> Result<BTreeSet<StorePath>> {
        let mut buf = Vec::new();
        put_u64(&mut buf, CMD_QUERY_CLOSURE);
        put_u64(&mut buf, include_outputs as u64);
        put_strings(&mut buf, paths.iter().map(|p| p.as_str()));
        self.send(&buf, "querying the closure").await?;
        wire::read_path_set(&mut self.r, &self.limits, "closure")
            .await
            .map_err(|e| e.into_error(&self.host, "querying the closure"))
    }

    /// QueryPathInfos (cmd 2): infos of the valid ones among `paths`, in one request.
    pub async fn query_path_infos(&mut self, paths: &[StorePath]) -> Result<Vec<PathInfo>> {
        let mut buf = Vec::new();
        put_u64(&mut buf, CMD_QUERY_PATH_INFOS);
        put_strings(&mut buf, paths.iter().map(|p| p.as_str()));
        self.send(&buf, "querying path infos").await?;
        let during = "reading path infos";
        let (r, l, minor) = (&mut self.r, &self.limits, self.version & 0xff);
        let res: Result<Vec<PathInfo>, WireError> = async {
            let mut out = Vec::new();
            loop {
                let p = wire::read_string(r, l, "store path").await?;
                if p.is_empty() {
                    break;
                }
                if out.len() as u64 >= l.max_set {
                    return Err(WireError::TooLong {
                        what: "path info list",
                        len: out.len() as u64 + 1,
                        limit: l.max_set,
                    });
                }
                let path = StorePath::new(p).map_err(|e| WireError::Invalid(e.to_string()))?;
                let deriver = wire::read_string(r, l, "deriver").await?;
                let deriver = if deriver.is_empty() {
                    None
                } else {
                    Some(StorePath::new(deriver).map_err(|e| WireError::Invalid(e.to_string()))?)
                };
                let references = wire::read_path_set(r, l, "references").await?;
                let _download_size = wire::read_u64(r).await?;
                let nar_size = wire::read_u64(r).await?;
                let (mut nar_hash, mut ca, mut sigs) = (String::new(), None, Vec::new());
                if minor >= 4 {
                    nar_hash = wire::read_string(r, l, "NAR hash").await?;
                    let c = wire::read_string(r, l, "content address").await?;
                    ca = (!c.is_empty()).then_some(c);
                    sigs = wire::read_strings(r, l, "signatures").await?;
                }
                out.push(PathInfo {
                    path,
                    deriver,
                    nar_hash,
                    nar_size,
                    references,
                    sigs,
                    ca,
                });
            }
            Ok(out)
        }
        .await;
        res.map_err(|e| e.into_error(&self.host, during))
    }

    /// Copy `infos` (in dependency order; see [`crate::local::topo_sort`]) from `store`:
    /// every NAR is dumped from the file system and streamed as pipelined AddToStoreNar
    /// requests. See [`ServeClient::add_stream`].
    pub async fn add_paths<S: NarSource>(
        &mut self,
        infos: &[PathInfo],
        store: &S,
        progress: &mut (dyn FnMut(AddEvent) + Send),
    ) -> Result<AddSummary> {
        let (tx, rx) = mpsc::channel(crate::copy::DEFAULT_BUFFER_CHUNKS);
        let infos: Vec<Arc<PathInfo>> = infos.iter().cloned().map(Arc::new).collect();
        let feeder = crate::copy::feed(store.clone(), infos, tx);
        let (_, res) = tokio::join!(feeder, self.add_stream(rx, progress));
        res
    }

    /// Pipelined AddToStoreNar (cmd 9): writes one request per path from `rx` back to back,
    /// never waiting for a reply, while reading the `1` acknowledgements concurrently. So the
    /// whole batch costs one round trip. The paths' references must be valid on the server or
    /// come earlier in the stream. On a source failure the stream is shut down mid-NAR, so the
    /// server registers nothing partial.
    pub async fn add_stream(
        &mut self,
        mut rx: mpsc::Receiver<NarMsg>,
        progress: &mut (dyn FnMut(AddEvent) + Send),
    ) -> Result<AddSummary> {
        if self.version < MIN_VERSION_ADD {
            return Err(Error::VersionTooOld {
                host: self.host.clone(),
                version: self.version,
                need: MIN_VERSION_ADD,
            });
        }
        let ServeClient { r, w, host, .. } = self;
        let host: &str = host;
        let progress = Mutex::new(progress);
        let (pending_tx, mut pending_rx) = mpsc::unbounded_channel::<StorePath>();

        let writer = async {
            let io = |e: std::io::Error, p: Option<&PathInfo>| Error::Io {
                host: host.to_string(),
                during: match p {
                    Some(p) => format!("sending {}", p.path),
                    None => "sending AddToStoreNar requests".into(),
                },
                source: e,
            };
            let mut current: Option<(Arc<PathInfo>, u64)> = None;
            let mut total = AddSummary::default();
            let result: Result<()> = async {
                while let Some(msg) = rx.recv().await {
                    match msg {
                        NarMsg::Start(info) => {
                            let _ = pending_tx.send(info.path.clone());
                            let head = add_request_header(&info);
                            w.write_all(&head).await.map_err(|e| io(e, Some(&info)))?;
                            current = Some((info, 0));
                        }
                        NarMsg::Chunk(b) => {
                            let Some((info, sent)) = current.as_mut() else {
                                return Err(Error::Protocol {
                                    host: host.into(),
                                    during: "streaming NARs".into(),
                                    detail: "chunk outside a path".into(),
                                });
                            };
                            *sent += b.len() as u64;
                            if *sent > info.nar_size {
                                return Err(Error::NarSizeMismatch {
                                    host: host.into(),
                                    path: info.path.clone(),
                                    want: info.nar_size,
                                    got: *sent,
                                });
                            }
                            w.write_all(&b).await.map_err(|e| io(e, Some(info)))?;
                        }
                        NarMsg::End => {
                            let Some((info, sent)) = current.take() else {
                                continue;
                            };
                            if sent != info.nar_size {
                                return Err(Error::NarSizeMismatch {
                                    host: host.into(),
                                    path: info.path.clone(),
                                    want: info.nar_size,
                                    got: sent,
                                });
                            }
                            total.paths += 1;
                            total.nar_bytes += sent;
                            (progress.lock().unwrap())(AddEvent::Sent {
                                path: info.path.clone(),
                                nar_bytes: total.nar_bytes,
                            });
                        }
                        NarMsg::Fail(e) => return Err(e),
                    }
                }
                if let Some((info, _)) = current.take() {
                    return Err(Error::CopyFailed {
                        host: host.into(),
                        path: info.path.clone(),
                        acknowledged: 0,
                        source: Box::new(Error::Cancelled { host: host.into() }),
                    });
                }
                w.flush().await.map_err(|e| io(e, None))
            }
            .await;
            drop(pending_tx);
            if result.is_err() {
                // Abort: the server sees EOF mid-request and registers nothing partial.
                let _ = w.shutdown().await;
            }
            result.map(|()| total)
        };

        let reader = async {
            let mut done = 0usize;
            while let Some(path) = pending_rx.recv().await {
                let during = format!("waiting for the acknowledgement of {path}");
                let reply = match wire::read_u64(r).await {
                    Ok(v) => v,
                    Err(e) => {
                        return Err(Error::CopyFailed {
                            host: host.into(),
                            path,
                            acknowledged: done,
                            source: Box::new(e.into_error(host, during)),
                        });
                    }
                };
                if reply != 1 {
                    return Err(Error::CopyFailed {
                        host: host.into(),
                        path,
                        acknowledged: done,
                        source: Box::new(Error::Protocol {
                            host: host.into(),
                            during,
                            detail: format!("expected 1, got {reply:#x}"),
                        }),
                    });
                }
                done += 1;
                (progress.lock().unwrap())(AddEvent::Acked { path, done });
            }
            Ok(done)
        };

        tokio::pin!(writer, reader);
        let mut written: Option<Result<AddSummary>> = None;
        loop {
            tokio::select! {
                res = &mut reader => {
                    return match (res, written) {
                        (Err(e), _) => Err(e),
                        (Ok(_), Some(w)) => w,
                        (Ok(_), None) => (&mut writer).await,
                    };
                }
                res = &mut writer, if written.is_none() => {
                    match res {
                        // A local failure: report it (the stream is already shut down).
                        Err(e) if !matches!(e, Error::Io { .. }) => return Err(e),
                        // A write error: the server most likely died; the reader says where.
                        other => written = Some(other),
                    }
                }
            }
        }
    }
}

fn add_request_header(info: &PathInfo) -> Vec<u8> {
    let mut b = Vec::with_capacity(256 + info.references.len() * 64);
    put_u64(&mut b, CMD_ADD_TO_STORE_NAR);
    put_bytes(&mut b, info.path.as_str().as_bytes());
    put_bytes(
        &mut b,
        info.deriver.as_ref().map_or("", |d| d.as_str()).as_bytes(),
    );
    put_bytes(&mut b, info.nar_hash.as_bytes());
    put_strings(&mut b, info.references.iter().map(|p| p.as_str()));
    put_u64(&mut b, 0); // registrationTime: now
    put_u64(&mut b, info.nar_size);
    put_u64(&mut b, 0); // ultimate
    put_strings(&mut b, info.sigs.iter().map(|s| s.as_str()));
    put_bytes(&mut b, info.ca.as_deref().unwrap_or("").as_bytes());
    b
}
