//! Client authentication: ssh-agent identities first, then identity files. An encrypted key
//! file is decrypted once per run (its passphrase asked through [`PassphrasePrompt`]) and
//! the decrypted key is shared by every host of the run.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use russh::client::Handle;
use russh::keys::agent::client::AgentClient;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};
use tokio::sync::OnceCell;
use zeroize::Zeroizing;

use super::error::{AuthAttempt, ConnectError};
use super::hostkey::Checker;
use super::Resolved;

/// The future a [`PassphrasePrompt`] returns: `None` means "skip this key".
pub type PassphraseFuture = Pin<Box<dyn Future<Output = Option<Zeroizing<String>>> + Send>>;

/// Asks for the passphrase of an encrypted identity file (the CLI prompts on the TTY).
pub trait PassphrasePrompt: Send + Sync {
    fn passphrase(&self, key_file: &Path) -> PassphraseFuture;
}

/// Never has a passphrase: encrypted keys are skipped.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPassphrase;

impl PassphrasePrompt for NoPassphrase {
    fn passphrase(&self, _: &Path) -> PassphraseFuture {
        Box::pin(async { None })
    }
}

impl<F> PassphrasePrompt for F
where
    F: Fn(&Path) -> PassphraseFuture + Send + Sync,
{
    fn passphrase(&self, key_file: &Path) -> PassphraseFuture {
        self(key_file)
    }
}

type Loaded = Result<Arc<PrivateKey>, String>;

/// Decrypted keys of this run, by path; each loaded (and its passphrase asked) once.
pub(crate) struct KeyCache {
    prompt: Arc<dyn PassphrasePrompt>,
    cells: Mutex<HashMap<PathBuf, Arc<OnceCell<Loaded>>>>,
}

impl KeyCache {
    pub(crate) fn new(prompt: Arc<dyn PassphrasePrompt>) -> Self {
        KeyCache {
            prompt,
            cells: Mutex::new(HashMap::new()),
        }
    }

    async fn load(&self, path: &Path) -> Loaded {
        let cell = self
            .cells
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(path.to_owned())
            .or_default()
            .clone();
        cell.get_or_init(|| load_key(path, self.prompt.clone()))
            .await
            .clone()
    }
}

fn looks_encrypted(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .map(|t| t.contains("ENCRYPTED"))
        .unwrap_or(false)
}

async fn load_key(path: &Path, prompt: Arc<dyn PassphrasePrompt>) -> Loaded {
    match russh::keys::load_secret_key(path, None) {
        Ok(k) => Ok(Arc::new(k)),
        Err(russh::keys::Error::KeyIsEncrypted) => decrypt(path, prompt).await,
        Err(_) if looks_encrypted(path) => decrypt(path, prompt).await,
        Err(e) => Err(format!("unreadable: {e}")),
    }
}

async fn decrypt(path: &Path, prompt: Arc<dyn PassphrasePrompt>) -> Loaded {
    let Some(pass) = prompt.passphrase(path).await else {
        return Err("encrypted, no passphrase given".into());
    };
    let p = path.to_owned();
    tokio::task::spawn_blocking(move || russh::keys::load_secret_key(&p, Some(&pass)))
        .await
        .map_err(|e| format!("decrypting: {e}"))?
        .map(Arc::new)
        .map_err(|_| "wrong passphrase".to_string())
}

pub(crate) async fn authenticate(
    handle: &mut Handle<Checker>,
    r: &Resolved,
    use_agent: bool,
    keys: &KeyCache,
) -> Result<(), ConnectError> {
    let mut tried = Vec::new();
    let mut server_methods: Vec<String> = Vec::new();
    let proto = |source: russh::Error| ConnectError::Ssh {
        host: r.host.clone(),
        port: r.port,
        source: Box::new(source),
    };
    let rsa_hash = handle
        .best_supported_rsa_hash()
        .await
        .map_err(proto)?
        .flatten();

    if use_agent && std::env::var_os("SSH_AUTH_SOCK").is_some() {
        match AgentClient::connect_env().await {
            Err(e) => tried.push(AuthAttempt {
                method: "agent".into(),
                what: "SSH_AUTH_SOCK".into(),
                result: format!("unusable: {e}"),
            }),
            Ok(mut agent) => {
                if let Some(b) = handle.agent_session_binding() {
                    let _ = agent.bind_session(b, false).await;
                }
                let ids = agent.request_identities().await.unwrap_or_default();
                for id in ids {
                    let pk = id.public_key().into_owned();
                    let what = if id.comment().is_empty() {
                        pk.algorithm().to_string()
                    } else {
                        id.comment().to_owned()
                    };
                    tracing::debug!(host = %r.host, user = %r.user, key = %what, "ssh: trying an agent key");
                    match handle
                        .authenticate_publickey_with(r.user.clone(), pk, rsa_hash, &mut agent)
                        .await
                    {
                        Ok(res) if res.success() => return Ok(()),
                        Ok(russh::client::AuthResult::Failure {
                            remaining_methods, ..
                        }) => {
                            server_methods = method_names(&remaining_methods);
                            tried.push(AuthAttempt {
                                method: "agent".into(),
                                what,
                                result: "rejected".into(),
                            });
                        }
                        Ok(_) => {}
                        Err(e) => tried.push(AuthAttempt {
                            method: "agent".into(),
                            what,
                            result: format!("agent error: {e}"),
                        }),
                    }
                    if handle.is_closed() {
                        break;
                    }
                }
            }
        }
    }

    for path in &r.identity_files {
        let what = path.display().to_string();
        let key = match keys.load(path).await {
            Ok(k) => k,
            Err(result) => {
                tried.push(AuthAttempt {
                    method: "key".into(),
                    what,
                    result,
                });
                continue;
            }
        };
        tracing::debug!(host = %r.host, user = %r.user, key = %what, "ssh: trying a key file");
        let res = handle
            .authenticate_publickey(r.user.clone(), PrivateKeyWithHashAlg::new(key, rsa_hash))
            .await
            .map_err(proto)?;
        match res {
            russh::client::AuthResult::Success => return Ok(()),
            russh::client::AuthResult::Failure {
                remaining_methods, ..
            } => {
                server_methods = method_names(&remaining_methods);
                tried.push(AuthAttempt {
                    method: "key".into(),
                    what,
                    result: "rejected".into(),
                });
            }
        }
    }
    Err(ConnectError::Auth {
        user: r.user.clone(),
        host: r.host.clone(),
        tried,
        server_methods,
    })
}

fn method_names(m: &russh::MethodSet) -> Vec<String> {
    m.iter()
        .map(|k| <&'static str>::from(k).to_owned())
        .collect()
}
