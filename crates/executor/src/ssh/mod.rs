//! Native SSH with russh: one authenticated connection per host, many channels on it.
//!
//! Layout:
//! - [`config`]: `~/.ssh/config` resolved like OpenSSH (HostName, User, Port, IdentityFile,
//!   ProxyJump; `Match`, `Include`).
//! - `hostkey`: pinned keys and known_hosts (strict; accept-new records, never overrides).
//! - `auth`: agent, then identity files (encrypted ones decrypted once per run via a prompt).
//! - `channel`: [`Connection::exec`] (capture) and [`Connection::spawn`] (binary streams),
//!   with the sudo handshake.
//! - [`cipher`]: the cipher order (AES-GCM first when both ends have AES instructions).
//! - [`error`]: typed errors.

pub mod cipher;
pub mod config;
pub mod error;

mod auth;
mod channel;
mod hostkey;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use russh::client;
use tokio::net::TcpStream;

pub use auth::{NoPassphrase, PassphraseFuture, PassphrasePrompt};
pub use channel::{
    ExitInfo, Output, RemoteExit, RemoteProcess, RemoteStdin, RemoteStdout, Stdin, STDERR_CAP,
};
use config::{parse_proxy_jump, SshConfig};
use error::ConnectError;

/// Everything fleet knows about how to reach one host. Fields left `None` are filled from
/// `~/.ssh/config` (matched on [`SshTarget::name`]), then from defaults.
#[derive(Debug, Clone, Default)]
pub struct SshTarget {
    /// The host's name in fleet (used for `Host` matching in ssh_config and in messages).
    pub name: String,
    /// Address or DNS name to connect to. `None`: ssh_config `HostName`, else `name`.
    pub address: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    /// Identity file from fleet.toml; tried before ssh_config's and the default ones.
    pub identity_file: Option<PathBuf>,
    /// Pinned host key, `"ssh-ed25519 AAAA..."`; when set, known_hosts is not consulted.
    pub host_key: Option<String>,
    /// known_hosts file to use instead of the connector's default.
    pub known_hosts: Option<PathBuf>,
    /// `[user@]host[:port][,...]`; `None`: ssh_config `ProxyJump`.
    pub proxy_jump: Option<String>,
    /// The host's CPU has AES instructions (fleet.toml says it is an x86_64 host): AES-GCM is
    /// then preferred over ChaCha20-Poly1305 if the deployer has them too ([`cipher`]).
    pub host_aes: bool,
}

/// Run-wide connection settings.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// TCP connect and SSH handshake each get this long.
    pub connect_timeout: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_max: usize,
    /// Record unknown host keys in known_hosts (never accepts a changed key).
    pub accept_new_host_keys: bool,
    /// Use `SSH_AUTH_SOCK` if set.
    pub use_agent: bool,
    /// ssh_config file; `None` disables reading one.
    pub ssh_config: Option<PathBuf>,
    /// Default known_hosts file.
    pub known_hosts: PathBuf,
    /// When neither the target nor ssh_config names identity files, try these if they exist.
    pub default_identity_files: Vec<PathBuf>,
    /// Login user when neither the target nor ssh_config sets one.
    pub default_user: String,
    /// Home directory for `~` in ssh_config.
    pub home: PathBuf,
    /// The local user name (`%u`, `Match localuser`, and `%r`/`Match user` when ssh_config sets
    /// no `User`), as for `ssh`.
    pub local_user: String,
}

impl ConnectOptions {
    /// Defaults from the environment: `$HOME/.ssh/{config,known_hosts,id_ed25519,id_ecdsa,id_rsa}`,
    /// `$USER`, 10 s connect timeout, keepalive every 5 s with 3 misses allowed.
    pub fn from_env() -> Self {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        let ssh = home.join(".ssh");
        let default_user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "root".into());
        ConnectOptions {
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(5),
            keepalive_max: 3,
            accept_new_host_keys: false,
            use_agent: true,
            ssh_config: Some(ssh.join("config")),
            known_hosts: ssh.join("known_hosts"),
            default_identity_files: ["id_ed25519", "id_ecdsa", "id_rsa"]
                .iter()
                .map(|f| ssh.join(f))
                .collect(),
            local_user: default_user.clone(),
            default_user,
            home,
        }
    }
}

/// Opens connections for one run: holds the options, the parsed ssh_config, the decrypted-key
/// cache (one passphrase prompt per key file per run) and the known_hosts write lock.
/// Share it (`Arc`) between host tasks.
pub struct Connector {
    options: ConnectOptions,
    ssh_config: SshConfig,
    keys: auth::KeyCache,
    known_hosts_lock: Arc<std::sync::Mutex<()>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

const MAX_JUMPS: usize = 8;

/// The settings actually used for a host after merging target, ssh_config and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub identity_files: Vec<PathBuf>,
    pub proxy_jump: Option<String>,
    pub known_hosts: PathBuf,
}

impl Connector {
    /// Reads the ssh_config (if any). `passphrase` is asked for encrypted identity files.
    pub fn new(
        options: ConnectOptions,
        passphrase: Arc<dyn PassphrasePrompt>,
    ) -> Result<Self, ConnectError> {
        let ssh_config = match &options.ssh_config {
            Some(p) => SshConfig::load(p, &options.home)?,
            None => SshConfig::default(),
        };
        Ok(Connector {
            options,
            ssh_config,
            keys: auth::KeyCache::new(passphrase),
            known_hosts_lock: Arc::new(std::sync::Mutex::new(())),
        })
    }

    /// Warnings from reading ssh_config (`Match` criteria fleet does not know), for the CLI.
    pub fn config_warnings(&self) -> &[String] {
        &self.ssh_config.warnings
    }

    pub fn options(&self) -> &ConnectOptions {
        &self.options
    }

    /// Merges target, ssh_config and defaults. Errors: ssh_config cannot be resolved for
    /// this host (e.g. an unknown `%` token).
    pub fn resolve(&self, target: &SshTarget) -> Result<Resolved, ConnectError> {
        let o = &self.options;
        let c = self.ssh_config.host(&config::HostQuery {
            host: &target.name,
            local_user: &o.local_user,
            home: &o.home,
        })?;
        let identity_files = if let Some(f) = &target.identity_file {
            let mut v = vec![f.clone()];
            v.extend(c.identity_files.iter().filter(|p| *p != f).cloned());
            v
        } else if !c.identity_files.is_empty() {
            c.identity_files.clone()
        } else {
            o.default_identity_files
                .iter()
                .filter(|p| p.exists())
                .cloned()
                .collect()
        };
        Ok(Resolved {
            host: target
                .address
                .clone()
                .or(c.host_name)
                .unwrap_or_else(|| target.name.clone()),
            port: target.port.or(c.port).unwrap_or(22),
            user: target
                .user
                .clone()
                .or(c.user)
                .unwrap_or_else(|| o.default_user.clone()),
            identity_files,
            proxy_jump: target.proxy_jump.clone().or(c.proxy_jump),
            known_hosts: target
                .known_hosts
                .clone()
                .unwrap_or_else(|| o.known_hosts.clone()),
        })
    }

    /// Connects, verifies the host key and authenticates.
    pub async fn connect(&self, target: &SshTarget) -> Result<Connection, ConnectError> {
        self.connect_depth(target, 0).await
    }

    fn connect_depth<'a>(
        &'a self,
        target: &'a SshTarget,
        depth: usize,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Connection, ConnectError>> + Send + 'a>,
    > {
        Box::pin(async move {
            let r = self.resolve(target)?;
            if depth > MAX_JUMPS {
                return Err(ConnectError::JumpLoop {
                    host: target.name.clone(),
                    max: MAX_JUMPS,
                });
            }
            let handler = hostkey::Checker::new(
                &r.host,
                r.port,
                target.host_key.as_deref(),
                r.known_hosts.clone(),
                self.options.accept_new_host_keys,
                self.known_hosts_lock.clone(),
            )?;
            let verdict = handler.verdict();
            let learned = handler.learned();
            let accepted = handler.accepted();
            let negotiated = handler.negotiated_cipher();
            let config = Arc::new(client::Config {
                preferred: cipher::preferred(target.host_aes),
                keepalive_interval: Some(self.options.keepalive_interval),
                keepalive_max: self.options.keepalive_max,
                nodelay: true,
                ..Default::default()
            });
            let timeout = self.options.connect_timeout;
            let handshake_timeout = |_| ConnectError::Timeout {
                host: r.host.clone(),
                port: r.port,
                after: timeout,
                stage: "ssh handshake",
            };
            let ssh_err = |e: russh::Error| match verdict.lock().expect("poisoned").take() {
                Some(hk) => ConnectError::HostKey(hk),
                None => ConnectError::Ssh {
                    host: r.host.clone(),
                    port: r.port,
                    source: Box::new(e),
                },
            };

            let (mut handle, jump) = match r.proxy_jump.as_deref() {
                Some(pj) => {
                    let hops =
                        parse_proxy_jump(pj).map_err(|message| ConnectError::BadProxyJump {
                            value: pj.to_owned(),
                            message,
                        })?;
                    // The last hop is the one that opens the tunnel; earlier hops are reached
                    // through it by its own (recursive) ProxyJump.
                    let last = hops.last().expect("parse gives at least one hop").clone();
                    let earlier: Vec<String> = hops[..hops.len() - 1]
                        .iter()
                        .map(|h| {
                            let mut s = String::new();
                            if let Some(u) = &h.user {
                                s.push_str(u);
                                s.push('@');
                            }
                            if h.host.contains(':') {
                                s.push_str(&format!("[{}]", h.host));
                            } else {
                                s.push_str(&h.host);
                            }
                            if let Some(p) = h.port {
                                s.push_str(&format!(":{p}"));
                            }
                            s
                        })
                        .collect();
                    let jump_target = SshTarget {
                        name: last.host.clone(),
                        user: last.user.clone(),
                        port: last.port,
                        proxy_jump: (!earlier.is_empty()).then(|| earlier.join(",")),
                        ..Default::default()
                    };
                    let jump_label = pj.to_owned();
                    let jump_conn =
                        self.connect_depth(&jump_target, depth + 1)
                            .await
                            .map_err(|e| ConnectError::Jump {
                                jump: jump_label.clone(),
                                source: Box::new(e),
                            })?;
                    let ch = jump_conn
                        .handle
                        .channel_open_direct_tcpip(r.host.clone(), r.port.into(), "127.0.0.1", 0)
                        .await
                        .map_err(|source| ConnectError::Tunnel {
                            jump: jump_label.clone(),
                            host: r.host.clone(),
                            port: r.port,
                            source: Box::new(source),
                        })?;
                    let h = tokio::time::timeout(
                        timeout,
                        client::connect_stream(config, ch.into_stream(), handler),
                    )
                    .await
                    .map_err(handshake_timeout)?
                    .map_err(ssh_err)?;
                    (h, Some(Arc::new(jump_conn)))
                }
                _ => {
                    tracing::debug!(host = %r.host, port = r.port, "ssh: connecting");
                    let stream = tcp_connect(&r.host, r.port, timeout).await?;
                    let h = tokio::time::timeout(
                        timeout,
                        client::connect_stream(config, stream, handler),
                    )
                    .await
                    .map_err(handshake_timeout)?
                    .map_err(ssh_err)?;
                    (h, None)
                }
            };
            tracing::debug!(host = %r.host, "ssh: host key accepted, authenticating");
            auth::authenticate(&mut handle, &r, self.options.use_agent, &self.keys).await?;
            tracing::debug!(host = %r.host, user = %r.user, "ssh: authenticated");
            let learned_host_key = learned.lock().unwrap_or_else(|p| p.into_inner()).take();
            let host_key = accepted.lock().unwrap_or_else(|p| p.into_inner()).take();
            let cipher = negotiated
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_default();
            tracing::debug!(host = %r.host, cipher = %cipher, "ssh: cipher");
            Ok(Connection {
                handle,
                name: target.name.clone(),
                resolved: r,
                learned_host_key,
                host_key,
                cipher,
                _jump: jump,
            })
        })
    }
}

async fn tcp_connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let to = |stage| ConnectError::Timeout {
        host: host.to_owned(),
        port,
        after: timeout,
        stage,
    };
    let addrs: Vec<_> = tokio::time::timeout(timeout, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| to("dns"))?
        .map_err(|source| ConnectError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Err(_) => last = Some(to("tcp")),
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Some(ConnectError::Refused {
                    host: host.to_owned(),
                    port,
                })
            }
            Ok(Err(source)) => {
                last = Some(ConnectError::Io {
                    host: host.to_owned(),
                    port,
                    source,
                })
            }
        }
    }
    Err(last.unwrap_or_else(|| ConnectError::Resolve {
        host: host.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
    }))
}

/// One authenticated SSH connection. Cheap to share behind an `Arc`; every
/// [`exec`](Connection::exec) / [`spawn`](Connection::spawn) opens its own channel.
pub struct Connection {
    handle: client::Handle<hostkey::Checker>,
    name: String,
    resolved: Resolved,
    learned_host_key: Option<String>,
    /// The host key this connection verified (pinned or known_hosts), OpenSSH format.
    host_key: Option<String>,
    /// The cipher the handshake settled on (`aes256-gcm@openssh.com`, ...).
    cipher: String,
    /// Keeps the jump host's connection (and so the tunnel) alive.
    _jump: Option<Arc<Connection>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.name)
            .field("resolved", &self.resolved)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The target's fleet name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Address, port and user actually used.
    pub fn resolved(&self) -> &Resolved {
        &self.resolved
    }

    /// The host key this connection recorded in known_hosts (`--accept-new-host-keys` and an
    /// unknown host), as fleet.toml's `host-key` value.
    pub fn learned_host_key(&self) -> Option<&str> {
        self.learned_host_key.as_deref()
    }

    /// The host key this connection verified (`ssh-ed25519 AAAA…`, no comment): what a relay
    /// is told to expect when it dials this host (docs/relay.md).
    pub fn host_key(&self) -> Option<&str> {
        self.host_key.as_deref()
    }

    /// The cipher the handshake settled on, as SSH names it (`aes256-gcm@openssh.com`,
    /// `chacha20-poly1305@openssh.com`, ...).
    pub fn cipher(&self) -> &str {
        &self.cipher
    }

    /// Whether the connection is gone (keepalive timeout, remote closed).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Opens a TCP connection from the host to `host:port` (as the host sees them) through this
    /// SSH connection (a `direct-tcpip` channel, as `ssh -L` does): nothing runs on the host.
    pub async fn open_tcp(
        &self,
        host: &str,
        port: u16,
    ) -> Result<russh::ChannelStream<russh::client::Msg>, russh::Error> {
        let ch = self
            .handle
            .channel_open_direct_tcpip(host.to_owned(), port.into(), "127.0.0.1", 0)
            .await?;
        Ok(ch.into_stream())
    }

    /// Says goodbye to the server.
    pub async fn close(&self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}
