//! Commands over exec channels: [`Connection::exec`] captures, [`Connection::spawn`] streams.
//!
//! Both go through the same sudo handshake when the privilege is
//! [`Privilege::Password`]: sudo is started with `-S -p FLEET-SUDO:` and a wrapper that prints
//! `FLEET-OK` on stderr once sudo let it through. fleet writes the password line to the
//! channel only after the prompt appeared on stderr, and lets the payload's stdin flow only
//! after `FLEET-OK`; a second prompt or "Sorry, try again" closes the channel at once and
//! yields [`ExecError::WrongSudoPassword`] (sudo saw exactly one attempt).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use russh::client::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::task::JoinHandle;

use super::error::ExecError;
use super::Connection;
use crate::sudo::{Privilege, SUDO_OK, SUDO_PROMPT};

/// What to feed a command's stdin. The channel gets EOF after it.
#[derive(Default)]
pub enum Stdin {
    #[default]
    None,
    Bytes(Bytes),
    Reader(Box<dyn AsyncRead + Send + Unpin>),
}

impl std::fmt::Debug for Stdin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stdin::None => f.write_str("Stdin::None"),
            Stdin::Bytes(b) => write!(f, "Stdin::Bytes({} bytes)", b.len()),
            Stdin::Reader(_) => f.write_str("Stdin::Reader(..)"),
        }
    }
}

/// A finished command's captured output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Exit status; `None` when killed by a signal.
    pub status: Option<u32>,
    /// Signal name (`TERM`, `KILL`, ...) when killed by one.
    pub signal: Option<String>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
    pub fn stdout_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// How a spawned process ended, and what it wrote on stderr (the first
/// [`STDERR_CAP`] bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    pub status: Option<u32>,
    pub signal: Option<String>,
    pub stderr: Vec<u8>,
}

impl ExitInfo {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// stderr kept for a spawned process (it is a side channel; the protocol is on stdout).
pub const STDERR_CAP: usize = 1 << 20;

/// Pipe capacity between the channel pump and [`RemoteStdout`].
const PIPE_CAPACITY: usize = 1 << 20;

fn channel_err(host: &str) -> impl FnOnce(russh::Error) -> ExecError + '_ {
    move |source| ExecError::Channel {
        host: host.to_owned(),
        source: Box::new(source),
    }
}

fn signal_name(s: &russh::Sig) -> String {
    format!("{s:?}")
        .trim_start_matches("Custom(\"")
        .trim_end_matches("\")")
        .to_owned()
}

enum Marker {
    Ok,
    Prompt,
    Sorry,
}

/// What came before `FLEET-OK`.
struct Early {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Connection {
    async fn open(
        &self,
        cmd: &str,
        privilege: &Privilege,
    ) -> Result<(ChannelReadHalf, ChannelWriteHalf<Msg>, Early), ExecError> {
        tracing::debug!(host = %self.name, command = cmd, "ssh: running");
        let ch = self
            .handle
            .channel_open_session()
            .await
            .map_err(channel_err(&self.name))?;
        let (mut read, write) = ch.split();
        write
            .exec(true, privilege.wrap(cmd))
            .await
            .map_err(channel_err(&self.name))?;
        let early = match privilege {
            Privilege::Password(src) => {
                match self.sudo_handshake(&mut read, &write, src, cmd).await {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = write.close().await;
                        return Err(e);
                    }
                }
            }
            _ => Early {
                stdout: Vec::new(),
                stderr: Vec::new(),
            },
        };
        Ok((read, write, early))
    }

    async fn sudo_handshake(
        &self,
        read: &mut ChannelReadHalf,
        write: &ChannelWriteHalf<Msg>,
        src: &crate::sudo::SudoPasswordSource,
        cmd: &str,
    ) -> Result<Early, ExecError> {
        let mut stdout = Vec::new();
        let mut err = Vec::new();
        let mut scanned = 0;
        let mut sent = false;
        let mut exited = false;
        loop {
            match read.wait().await {
                Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                    err.extend_from_slice(&data);
                    loop {
                        let rest = &err[scanned..];
                        // Act on whichever marker comes first.
                        let next = [
                            (find(rest, SUDO_OK.as_bytes()), Marker::Ok),
                            (find(rest, SUDO_PROMPT.as_bytes()), Marker::Prompt),
                            (find(rest, b"Sorry, try again"), Marker::Sorry),
                        ]
                        .into_iter()
                        .filter_map(|(p, m)| p.map(|p| (p, m)))
                        .min_by_key(|(p, _)| *p);
                        match next {
                            None => break,
                            Some((_, Marker::Sorry)) => {
                                return Err(ExecError::WrongSudoPassword {
                                    host: self.name.clone(),
                                })
                            }
                            Some((o, Marker::Ok)) => {
                                let after = scanned + o + SUDO_OK.len();
                                return Ok(Early {
                                    stdout,
                                    stderr: err[after..].to_vec(),
                                });
                            }
                            Some((p, Marker::Prompt)) => {
                                if sent {
                                    return Err(ExecError::WrongSudoPassword {
                                        host: self.name.clone(),
                                    });
                                }
                                scanned += p + SUDO_PROMPT.len();
                                let pw =
                                    src.get().await.map_err(|source| ExecError::SudoPassword {
                                        host: self.name.clone(),
                                        source,
                                    })?;
                                let line = pw.line();
                                write
                                    .data(&line[..])
                                    .await
                                    .map_err(channel_err(&self.name))?;
                                sent = true;
                            }
                        }
                    }
                }
                Some(ChannelMsg::Data { data }) => stdout.extend_from_slice(&data),
                Some(ChannelMsg::ExitStatus { .. }) | Some(ChannelMsg::ExitSignal { .. }) => {
                    exited = true
                }
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            }
        }
        if exited {
            let text = String::from_utf8_lossy(&err[..])
                .replace(SUDO_PROMPT, "")
                .trim()
                .to_owned();
            Err(ExecError::SudoRefused {
                host: self.name.clone(),
                message: if text.is_empty() {
                    "sudo exited before running the command".into()
                } else {
                    text
                },
            })
        } else {
            Err(ExecError::UnknownOutcome {
                host: self.name.clone(),
                command: cmd.to_owned(),
            })
        }
    }

    /// Runs a shell command line (quote every interpolated argument with
    /// [`crate::quote`]) and captures its output. Stdin is streamed (flow-controlled) and
    /// closed at its end. A connection lost before an exit status arrived is
    /// [`ExecError::UnknownOutcome`].
    pub async fn exec(
        &self,
        cmd: &str,
        privilege: &Privilege,
        stdin: Stdin,
    ) -> Result<Output, ExecError> {
        let (mut read, write, early) = self.open(cmd, privilege).await?;
        let mut out = Output {
            stdout: early.stdout,
            stderr: early.stderr,
            status: None,
            signal: None,
        };
        let stdin_failed = {
            let out = &mut out;
            let reader = async {
                while let Some(msg) = read.wait().await {
                    match msg {
                        ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                        ChannelMsg::ExtendedData { data, ext: 1 } => {
                            out.stderr.extend_from_slice(&data)
                        }
                        ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
                        ChannelMsg::ExitSignal { signal_name: s, .. } => {
                            out.signal = Some(signal_name(&s))
                        }
                        ChannelMsg::Close => break,
                        _ => {}
                    }
                }
            };
            let writer = feed_stdin(&write, stdin);
            tokio::pin!(reader, writer);
            tokio::select! {
                () = &mut reader => None,
                res = &mut writer => match res {
                    Err(e) => Some(e),
                    Ok(()) => { reader.await; None }
                },
            }
        };
        if let Some(source) = stdin_failed {
            let _ = write.close().await;
            return Err(ExecError::Stdin {
                host: self.name.clone(),
                command: cmd.to_owned(),
                source,
            });
        }
        if out.status.is_none() && out.signal.is_none() {
            return Err(ExecError::UnknownOutcome {
                host: self.name.clone(),
                command: cmd.to_owned(),
            });
        }
        Ok(out)
    }

    /// Starts a command whose stdin/stdout carry a binary stream (the Nix serve protocol).
    /// With [`Privilege::Password`] this returns after sudo accepted the password, so the
    /// first byte the caller writes reaches the command.
    pub async fn spawn(
        &self,
        cmd: &str,
        privilege: &Privilege,
    ) -> Result<RemoteProcess, ExecError> {
        let (read, write, early) = self.open(cmd, privilege).await?;
        let (mut pipe_in, pipe_out) = tokio::io::duplex(PIPE_CAPACITY);
        let host = self.name.clone();
        let command = cmd.to_owned();
        let shut = Arc::new(AtomicBool::new(false));
        let ended = tokio_util::sync::CancellationToken::new();
        let stdin = RemoteStdin {
            inner: Box::pin(write.make_writer()),
            shut: shut.clone(),
            ended_wait: Box::pin(ended.clone().cancelled_owned()),
            ended: ended.clone(),
        };
        let pump = tokio::spawn(async move {
            // However the loop ends (channel closed, connection gone), writers stop waiting.
            let _ended = ended.drop_guard();
            let mut read = read;
            let mut info = ExitInfo {
                status: None,
                signal: None,
                stderr: early.stderr,
            };
            let mut sink_alive = true;
            if !early.stdout.is_empty() && pipe_in.write_all(&early.stdout).await.is_err() {
                sink_alive = false;
            }
            while let Some(msg) = read.wait().await {
                match msg {
                    ChannelMsg::Data { data } if sink_alive => {
                        sink_alive = pipe_in.write_all(&data).await.is_ok();
                    }
                    ChannelMsg::ExtendedData { data, ext: 1 } => {
                        let room = STDERR_CAP.saturating_sub(info.stderr.len());
                        info.stderr.extend_from_slice(&data[..room.min(data.len())]);
                    }
                    ChannelMsg::ExitStatus { exit_status } => info.status = Some(exit_status),
                    ChannelMsg::ExitSignal { signal_name: s, .. } => {
                        info.signal = Some(signal_name(&s))
                    }
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
            drop(pipe_in);
            if info.status.is_none() && info.signal.is_none() {
                return Err(ExecError::UnknownOutcome { host, command });
            }
            Ok(info)
        });
        Ok(RemoteProcess {
            stdout: RemoteStdout(pipe_out),
            stdin,
            exit: RemoteExit {
                pump: Some(pump),
                write: Some(write),
                shut,
                host: self.name.clone(),
                command: cmd.to_owned(),
            },
        })
    }
}

async fn feed_stdin(write: &ChannelWriteHalf<Msg>, stdin: Stdin) -> io::Result<()> {
    let mut w = write.make_writer();
    match stdin {
        Stdin::None => {}
        Stdin::Bytes(b) => {
            if w.write_all(&b).await.is_err() {
                // The command stopped reading; its exit status tells the rest.
                return Ok(());
            }
        }
        Stdin::Reader(mut r) => {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = r.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                if w.write_all(&buf[..n]).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
    let _ = w.shutdown().await;
    // Never finish first: the reader decides when the command is done.
    std::future::pending::<()>().await;
    Ok(())
}

/// The remote command's stdout as a byte stream.
#[derive(Debug)]
pub struct RemoteStdout(DuplexStream);

impl AsyncRead for RemoteStdout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

/// The remote command's stdin. `shutdown()` sends EOF. Once the channel is closed (the command
/// ended, or the connection is gone), writes fail with `BrokenPipe` instead of waiting forever
/// for window space the remote will never grant.
pub struct RemoteStdin {
    inner: Pin<Box<dyn AsyncWrite + Send>>,
    shut: Arc<AtomicBool>,
    ended: tokio_util::sync::CancellationToken,
    ended_wait: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl RemoteStdin {
    fn broken() -> io::Error {
        io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the remote command's channel is closed",
        )
    }
}

impl std::fmt::Debug for RemoteStdin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RemoteStdin")
    }
}

impl AsyncWrite for RemoteStdin {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.ended.is_cancelled() {
            return Poll::Ready(Err(Self::broken()));
        }
        match self.inner.as_mut().poll_write(cx, buf) {
            Poll::Pending if self.ended_wait.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Err(Self::broken()))
            }
            r => r,
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.as_mut().poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.ended.is_cancelled() {
            self.shut.store(true, Ordering::SeqCst);
            return Poll::Ready(Ok(()));
        }
        let r = self.inner.as_mut().poll_shutdown(cx);
        if r.is_ready() {
            self.shut.store(true, Ordering::SeqCst);
        }
        r
    }
}

/// A running remote command with binary stdin/stdout. Read [`stdout`](Self::stdout), write
/// [`stdin`](Self::stdin) (`shutdown()` = EOF), then [`finish`](Self::finish). Use
/// [`into_parts`](Self::into_parts) to move the halves into different tasks, or
/// `tokio::io::join(stdout, stdin)` for one `AsyncRead + AsyncWrite` stream. Dropping it
/// unfinished closes the channel.
#[derive(Debug)]
pub struct RemoteProcess {
    pub stdout: RemoteStdout,
    pub stdin: RemoteStdin,
    pub exit: RemoteExit,
}

/// The part of a [`RemoteProcess`] that waits for its end (exit status and stderr).
#[derive(Debug)]
pub struct RemoteExit {
    pump: Option<JoinHandle<Result<ExitInfo, ExecError>>>,
    write: Option<ChannelWriteHalf<Msg>>,
    shut: Arc<AtomicBool>,
    host: String,
    command: String,
}

impl RemoteProcess {
    pub fn into_parts(self) -> (RemoteStdout, RemoteStdin, RemoteExit) {
        (self.stdout, self.stdin, self.exit)
    }

    /// Sends EOF on stdin if not done yet, drops stdout (unread output is discarded), and
    /// waits for the exit status.
    pub async fn finish(self) -> Result<ExitInfo, ExecError> {
        drop(self.stdout);
        self.exit.finish().await
    }

    /// Closes the channel (the remote side sees EOF/SIGPIPE; SSH signals are unreliable).
    pub async fn kill(self) {
        self.exit.kill().await
    }
}

impl RemoteExit {
    /// Sends EOF on stdin if the [`RemoteStdin`] was not shut down, then waits for the exit
    /// status. Drop the [`RemoteStdout`] first or keep reading it: output not read blocks the
    /// remote command (flow control). A connection lost before the status arrived is
    /// [`ExecError::UnknownOutcome`].
    pub async fn finish(mut self) -> Result<ExitInfo, ExecError> {
        let write = self.write.take().expect("present until finish/drop");
        if !self.shut.load(Ordering::SeqCst) {
            let _ = write.eof().await;
        }
        let pump = self.pump.take().expect("present until finish/drop");
        let res = pump.await.unwrap_or_else(|_| {
            Err(ExecError::UnknownOutcome {
                host: self.host.clone(),
                command: self.command.clone(),
            })
        });
        drop(write);
        res
    }

    /// Closes the channel.
    pub async fn kill(mut self) {
        if let Some(w) = self.write.take() {
            let _ = w.close().await;
        }
    }
}

impl Drop for RemoteExit {
    fn drop(&mut self) {
        if let Some(w) = self.write.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = w.close().await;
                });
            }
        }
    }
}
