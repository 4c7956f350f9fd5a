//! Scaling out on Nix in the test world (docs/scale.md, docs/testing.md): a signed binary cache
//! on the test bridge, served over HTTP by the test process, that hosts trust through their own
//! `/etc/nix/nix.conf`; and the machine line that makes a simulated host a remote builder.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::cmd::{cmd, run};
use crate::error::{Error, Result};
use crate::setup::{mkdir, write};
use crate::testbed::Testbed;

/// The port the cache listens on, at the deployer's bridge address.
pub const CACHE_PORT: u16 = 5080;

/// The holder-script line that gives a host its own `/etc/nix` (with `nix.conf` = `text`), or
/// nothing when the host has none. `/etc/nix` is created on this machine as an empty mount
/// point if missing, like `/etc/nixos`.
pub(crate) fn etc_nix_mount(dir: &Path, text: Option<&str>) -> Result<String> {
    let Some(text) = text else {
        return Ok(String::new());
    };
    mkdir(Path::new("/etc/nix"))?;
    let etc_nix = dir.join("etc-nix");
    mkdir(&etc_nix)?;
    write(&etc_nix.join("nix.conf"), text)?;
    Ok(format!("mount --bind '{}' /etc/nix", etc_nix.display()))
}

/// How the cache answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CacheMode {
    /// Serves every file.
    Up = 0,
    /// Serves `nix-cache-info` and `.narinfo` files but answers 500 for NARs: hosts believe
    /// it has the paths, and fail to fetch them.
    NarsFail = 1,
    /// Not listening: connections are refused.
    Down = 2,
}

/// A signed binary cache (`nix copy --to file://DIR`) served over HTTP on the test bridge.
/// Dropping it stops the server; its directory goes with the testbed's state directory.
#[derive(Debug)]
pub struct BinaryCache {
    dir: PathBuf,
    secret_key: PathBuf,
    public_key: String,
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    nar_bytes: Arc<AtomicU64>,
    server: Option<JoinHandle<()>>,
}

impl Testbed {
    /// Starts an empty binary cache at `http://<deployer address>:5080` with a fresh signing
    /// key (`nix-store --generate-binary-cache-key`).
    pub fn start_binary_cache(&self) -> Result<BinaryCache> {
        let dir = self.state_dir().join("binary-cache");
        mkdir(&dir.join("files"))?;
        let secret_key = dir.join("secret-key");
        let public = dir.join("public-key");
        let name = format!("fleet-testbed-{}", self.instance());
        let mut c = cmd("nix-store", ["--generate-binary-cache-key", &name]);
        c.arg(&secret_key).arg(&public);
        run(&mut c)?;
        let public_key = std::fs::read_to_string(&public)
            .map_err(|source| Error::Io {
                action: "reading",
                path: public.clone(),
                source,
            })?
            .trim()
            .to_owned();
        // Nix wants `nix-cache-info` before it asks for anything else.
        write(
            &dir.join("files/nix-cache-info"),
            "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n",
        )?;
        let addr = SocketAddr::new(self.deployer_address(), CACHE_PORT);
        let mode = Arc::new(AtomicU8::new(CacheMode::Up as u8));
        let stop = Arc::new(AtomicBool::new(false));
        let nar_bytes = Arc::new(AtomicU64::new(0));
        let listener = bind(addr)?;
        let server = {
            let (root, mode, stop, nar_bytes) = (
                dir.join("files"),
                mode.clone(),
                stop.clone(),
                nar_bytes.clone(),
            );
            std::thread::spawn(move || serve(listener, addr, &root, &mode, &stop, &nar_bytes))
        };
        Ok(BinaryCache {
            dir,
            secret_key,
            public_key,
            addr,
            mode,
            stop,
            nar_bytes,
            server: Some(server),
        })
    }

    /// A machine line (Nix's `builders` format) that makes `host` a remote builder for
    /// `systems` (comma-separated), reached as root with the testbed's key over `ssh-ng://`,
    /// its host key pinned in the line (field 8, base64), so no known_hosts is needed. The
    /// host itself needs `extra-platforms` for systems other than this machine's
    /// ([`crate::HostSpec::nix_conf`]).
    pub fn builder_line(&self, host: &str, systems: &str) -> String {
        let h = self.host(host);
        let key = base64(h.host_key_line.as_bytes());
        format!(
            "ssh-ng://root@{} {systems} {} 2 1 - - {key}",
            h.address,
            self.client_key_path().display()
        )
    }

    /// Replaces the host's `/etc/nix/nix.conf` (the host must have been started with one).
    pub fn set_nix_conf(&self, host: &str, text: &str) -> Result<()> {
        let path = self.host_dir(host)?.join("etc-nix/nix.conf");
        if !path.exists() {
            return Err(Error::InvalidHost {
                name: host.into(),
                reason: "started without HostSpec::nix_conf".into(),
            });
        }
        write(&path, text)
    }
}

impl BinaryCache {
    /// `http://172.31.<n>.1:5080`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `fleet-testbed-<n>:<base64>`, for `trusted-public-keys`.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// nix.conf lines that make a host use (only) this cache. `download-attempts = 1` and a
    /// short `connect-timeout` so a test of a cache that is down does not wait for retries;
    /// `narinfo-cache-negative-ttl = 0` so a path asked for before it was pushed is not
    /// remembered as missing (Nix remembers that for an hour by default).
    pub fn nix_conf(&self) -> String {
        format!(
            "substituters = {}\ntrusted-public-keys = {}\nconnect-timeout = 2\ndownload-attempts = 1\nnarinfo-cache-negative-ttl = 0\nsandbox = false\n",
            self.url(),
            self.public_key
        )
    }

    /// Copies `paths` (with their closures) from this machine's store into the cache, signed
    /// (`nix copy --to file://DIR?secret-key=...`).
    pub fn push(&self, paths: &[String], nix_env: &[(String, String)]) -> Result<()> {
        let mut c = cmd(
            "nix",
            [
                "--extra-experimental-features",
                "nix-command",
                "copy",
                "--to",
            ],
        );
        c.arg(self.store_url())
            .args(paths)
            .envs(nix_env.iter().map(|(k, v)| (k, v)));
        run(&mut c).map(drop)
    }

    /// The Nix store URL that writes into the cache, signing (`file://DIR?secret-key=…`), for
    /// `nix copy --to` or `fleet build --to`.
    pub fn store_url(&self) -> String {
        format!(
            "file://{}?secret-key={}&compression=none",
            self.dir.join("files").display(),
            self.secret_key.display()
        )
    }

    /// Changes how the cache answers from now on.
    pub fn set_mode(&self, mode: CacheMode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// NAR bytes served so far (what hosts fetched from the cache).
    pub fn nar_bytes_served(&self) -> u64 {
        self.nar_bytes.load(Ordering::SeqCst)
    }
}

impl Drop for BinaryCache {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.server.take() {
            let _ = h.join();
        }
    }
}

/// Standard base64 with padding (`base64 -w0`).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let listener = TcpListener::bind(addr).map_err(|source| Error::Io {
        action: "listening for the binary cache on",
        path: PathBuf::from(addr.to_string()),
        source,
    })?;
    listener.set_nonblocking(true).map_err(|source| Error::Io {
        action: "configuring the binary cache's socket",
        path: PathBuf::from(addr.to_string()),
        source,
    })?;
    Ok(listener)
}

/// The accept loop: polls so it can close its socket while the cache is `Down` and stop.
fn serve(
    listener: TcpListener,
    addr: SocketAddr,
    root: &Path,
    mode: &AtomicU8,
    stop: &AtomicBool,
    nar_bytes: &Arc<AtomicU64>,
) {
    let mut listener = Some(listener);
    while !stop.load(Ordering::SeqCst) {
        let current = mode.load(Ordering::SeqCst);
        if current == CacheMode::Down as u8 {
            listener = None;
        } else if listener.is_none() {
            listener = bind(addr).ok();
        }
        match listener.as_ref().map(TcpListener::accept) {
            Some(Ok((stream, _))) => {
                let (root, nar_bytes) = (root.to_path_buf(), nar_bytes.clone());
                let nars_fail = current == CacheMode::NarsFail as u8;
                std::thread::spawn(move || {
                    let _ = answer(stream, &root, nars_fail, &nar_bytes);
                });
            }
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// One connection: GET requests (keep-alive), files under `root`.
fn answer(
    stream: TcpStream,
    root: &Path,
    nars_fail: bool,
    nar_bytes: &AtomicU64,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let mut header = String::new();
        while reader.read_line(&mut header)? > 0 && header.trim() != "" {
            header.clear();
        }
        let mut parts = request.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        let path = target
            .split('?')
            .next()
            .unwrap_or("/")
            .trim_start_matches('/');
        let safe = !path.is_empty() && !path.split('/').any(|c| c == ".." || c.is_empty());
        let file = root.join(path);
        let (status, body) = if nars_fail && path.starts_with("nar/") {
            ("500 Internal Server Error", Vec::new())
        } else if safe && file.is_file() {
            let mut body = Vec::new();
            std::fs::File::open(&file)?.read_to_end(&mut body)?;
            if path.starts_with("nar/") {
                nar_bytes.fetch_add(body.len() as u64, Ordering::SeqCst);
            }
            ("200 OK", body)
        } else {
            ("404 Not Found", Vec::new())
        };
        write!(
            out,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
            body.len()
        )?;
        if method != "HEAD" {
            out.write_all(&body)?;
        }
        out.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_coreutils() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"ssh-ed25519 AAAA"), "c3NoLWVkMjU1MTkgQUFBQQ==");
    }
}
