//! The local store: where NARs are read from, and batched queries through one local
//! `nix-store --serve` process (one QueryClosure + one QueryPathInfos request, whatever the
//! number of paths).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

use crate::serve::ServeClient;
use crate::{Error, PathInfo, Result, StorePath};

/// Label used in errors for the local store.
pub const LOCAL: &str = "local store";

/// A local Nix store: the system store, or a chroot store (`--store <dir>`, files under
/// `<dir>/nix/store`).
#[derive(Debug, Clone)]
pub struct LocalStore {
    store: Option<String>,
    root: PathBuf,
    nix_store: PathBuf,
}

impl Default for LocalStore {
    fn default() -> Self {
        Self::system()
    }
}

impl crate::NarSource for LocalStore {
    fn real_path(&self, path: &StorePath) -> PathBuf {
        LocalStore::real_path(self, path)
    }
}

impl LocalStore {
    /// The store `nix-store` opens by default (`/nix/store` on this file system).
    pub fn system() -> Self {
        LocalStore {
            store: None,
            root: PathBuf::from("/"),
            nix_store: PathBuf::from("nix-store"),
        }
    }

    /// A chroot store rooted at `dir` (`nix-store --store <dir>`).
    pub fn chroot(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        LocalStore {
            store: Some(dir.display().to_string()),
            root: dir.to_path_buf(),
            nix_store: PathBuf::from("nix-store"),
        }
    }

    /// Use another `nix-store` binary.
    pub fn with_nix_store(mut self, program: impl Into<PathBuf>) -> Self {
        self.nix_store = program.into();
        self
    }

    /// Where `path`'s files are on this file system.
    pub fn real_path(&self, path: &StorePath) -> PathBuf {
        self.root.join(path.as_str().trim_start_matches('/'))
    }

    /// A `nix-store` command for this store (with `--store` when it is a chroot store).
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.nix_store);
        if let Some(s) = &self.store {
            c.arg("--store").arg(s);
        }
        c
    }

    /// Start `nix-store --serve [--write]` on this store and handshake with it.
    pub async fn serve(&self, write: bool) -> Result<LocalServe> {
        let mut cmd = self.command();
        cmd.arg("--serve");
        if write {
            cmd.arg("--write");
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| Error::Spawn {
            program: self.nix_store.display().to_string(),
            source: e,
        })?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let stderr = tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                if buf.len() < 64 * 1024 {
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
            String::from_utf8_lossy(&buf).into_owned()
        });
        let label = match &self.store {
            Some(s) => format!("local store {s}"),
            None => LOCAL.to_string(),
        };
        let mut serve = LocalServe {
            client: None,
            child,
            stderr: Some(stderr),
            label: label.clone(),
        };
        match ServeClient::handshake(stdout, stdin, label).await {
            Ok(c) => {
                serve.client = Some(c);
                Ok(serve)
            }
            Err(e) => Err(serve.explain(e, "handshake").await),
        }
    }
}

/// A local `nix-store --serve` child process and its client. Killed on drop.
pub struct LocalServe {
    client: Option<ServeClient<ChildStdout, ChildStdin>>,
    child: Child,
    stderr: Option<JoinHandle<String>>,
    label: String,
}

impl LocalServe {
    /// The protocol client.
    pub fn client(&mut self) -> &mut ServeClient<ChildStdout, ChildStdin> {
        self.client.as_mut().expect("client present until finish")
    }

    /// Process id of the server (for tests that kill it).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Close the stream and wait for the server; a non-zero exit becomes [`Error::RemoteFailed`].
    pub async fn finish(mut self) -> Result<()> {
        if let Some(mut c) = self.client.take() {
            let _ = c.shutdown().await;
            drop(c);
        }
        let status = self.child.wait().await.map_err(|e| Error::Io {
            host: self.label.clone(),
            during: "waiting for nix-store".into(),
            source: e,
        })?;
        let stderr = match self.stderr.take() {
            Some(h) => h.await.unwrap_or_default(),
            None => String::new(),
        };
        if status.success() {
            Ok(())
        } else {
            Err(Error::RemoteFailed {
                host: self.label.clone(),
                during: "serving".into(),
                status: status.code(),
                stderr: stderr.trim().to_string(),
            })
        }
    }

    /// Turn a protocol error into one that carries the server's stderr and exit status, when
    /// the server died (EOF / broken pipe); other errors are returned unchanged.
    pub async fn explain(&mut self, err: Error, during: &str) -> Error {
        let died = match &err {
            Error::UnexpectedEof { .. } | Error::Io { .. } => true,
            Error::CopyFailed { source, .. } => {
                matches!(**source, Error::UnexpectedEof { .. } | Error::Io { .. })
            }
            _ => false,
        };
        if !died {
            return err;
        }
        if let Some(mut c) = self.client.take() {
            let _ = c.shutdown().await;
        }
        let status =
            tokio::time::timeout(std::time::Duration::from_secs(10), self.child.wait()).await;
        let stderr = match self.stderr.take() {
            Some(h) => h.await.unwrap_or_default(),
            None => String::new(),
        };
        let remote = Error::RemoteFailed {
            host: self.label.clone(),
            during: during.to_string(),
            status: status.ok().and_then(|s| s.ok()).and_then(|s| s.code()),
            stderr: stderr.trim().to_string(),
        };
        match err {
            Error::CopyFailed {
                host,
                path,
                acknowledged,
                ..
            } => Error::CopyFailed {
                host,
                path,
                acknowledged,
                source: Box::new(remote),
            },
            _ => remote,
        }
    }
}

/// The closure of `roots` in `store` (like `nix-store -qR`), in one request.
pub async fn closure(store: &LocalStore, roots: &[StorePath]) -> Result<BTreeSet<StorePath>> {
    let mut s = store.serve(false).await?;
    let res = s.client().query_closure(roots, false).await;
    let out = match res {
        Ok(v) => v,
        Err(e) => return Err(s.explain(e, "querying the closure").await),
    };
    s.finish().await?;
    Ok(out)
}

/// Path infos of `paths` in `store`, in one request. Paths that are not valid are missing from
/// the result.
pub async fn path_infos(store: &LocalStore, paths: &[StorePath]) -> Result<Vec<PathInfo>> {
    let mut s = store.serve(false).await?;
    let res = s.client().query_path_infos(paths).await;
    let out = match res {
        Ok(v) => v,
        Err(e) => return Err(s.explain(e, "querying path infos").await),
    };
    s.finish().await?;
    Ok(out)
}

/// Closure of `roots` with every path's info, sorted references-first: one process, two
/// requests.
pub async fn closure_infos(store: &LocalStore, roots: &[StorePath]) -> Result<Vec<PathInfo>> {
    let mut s = store.serve(false).await?;
    let res = async {
        let c = s.client().query_closure(roots, false).await?;
        let c: Vec<StorePath> = c.into_iter().collect();
        s.client().query_path_infos(&c).await
    }
    .await;
    let infos = match res {
        Ok(v) => v,
        Err(e) => return Err(s.explain(e, "querying the closure").await),
    };
    s.finish().await?;
    topo_sort(infos)
}

/// Sort so that every path comes after the paths it references (self-references and
/// references outside the set are ignored). Deterministic: ties are broken by path order.
pub fn topo_sort(infos: Vec<PathInfo>) -> Result<Vec<PathInfo>> {
    let mut by_path: BTreeMap<StorePath, PathInfo> =
        infos.into_iter().map(|i| (i.path.clone(), i)).collect();
    let keys: Vec<StorePath> = by_path.keys().cloned().collect();
    // 0 = new, 1 = on the stack, 2 = done
    let mut state: BTreeMap<StorePath, u8> = BTreeMap::new();
    let mut order = Vec::with_capacity(keys.len());
    for root in keys {
        if state.contains_key(&root) {
            continue;
        }
        // Iterative DFS: (path, its references still to visit).
        let mut stack: Vec<(StorePath, Vec<StorePath>)> = Vec::new();
        let refs = |p: &StorePath, m: &BTreeMap<StorePath, PathInfo>| -> Vec<StorePath> {
            m[p].references
                .iter()
                .rev()
                .filter(|r| *r != p && m.contains_key(*r))
                .cloned()
                .collect()
        };
        state.insert(root.clone(), 1);
        stack.push((root.clone(), refs(&root, &by_path)));
        while let Some((p, todo)) = stack.last_mut() {
            if let Some(next) = todo.pop() {
                match state.get(&next) {
                    None => {
                        state.insert(next.clone(), 1);
                        let r = refs(&next, &by_path);
                        stack.push((next, r));
                    }
                    Some(1) => return Err(Error::Cycle { path: next }),
                    _ => {}
                }
            } else {
                let p = p.clone();
                state.insert(p.clone(), 2);
                order.push(p);
                stack.pop();
            }
        }
    }
    Ok(order
        .into_iter()
        .map(|p| by_path.remove(&p).expect("present"))
        .collect())
}
