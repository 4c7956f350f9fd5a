//! Host key verification: a pinned key must match exactly; otherwise known_hosts must know the
//! host. Unknown keys are recorded only with `accept_new`; a changed key is never accepted.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use russh::keys::{known_hosts, HashAlg, PublicKey, PublicKeyOrCertificate};

use super::error::HostKeyError;

/// The russh client handler: its only job is the host key check. A refusal is stored in
/// `verdict` (russh itself only reports "Unknown server key").
pub(crate) struct Checker {
    host: String,
    port: u16,
    pinned: Option<PublicKey>,
    known_hosts: PathBuf,
    accept_new: bool,
    lock: Arc<Mutex<()>>,
    verdict: Arc<Mutex<Option<HostKeyError>>>,
    /// The key recorded in known_hosts by `accept_new` (OpenSSH format), if any.
    learned: Arc<Mutex<Option<String>>>,
    /// The key this check accepted (OpenSSH format, no comment): what a relay is told to
    /// expect from this host (docs/relay.md).
    accepted: Arc<Mutex<Option<String>>>,
    /// The cipher of the last key exchange.
    cipher: Arc<Mutex<Option<String>>>,
}

/// A key as fleet.toml's `host-key` value: `ALGORITHM BASE64`, no comment.
pub(crate) fn pin_line(k: &PublicKey) -> String {
    let mut k = k.clone();
    k.set_comment("");
    k.to_openssh()
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| fingerprint(&k))
}

pub(crate) fn fingerprint(k: &PublicKey) -> String {
    k.fingerprint(HashAlg::Sha256).to_string()
}

impl Checker {
    pub(crate) fn new(
        host: &str,
        port: u16,
        pin: Option<&str>,
        known_hosts: PathBuf,
        accept_new: bool,
        lock: Arc<Mutex<()>>,
    ) -> Result<Self, HostKeyError> {
        let pinned = pin
            .map(|p| {
                PublicKey::from_openssh(p.trim()).map_err(|e| HostKeyError::InvalidPin {
                    host: host.to_owned(),
                    message: e.to_string(),
                })
            })
            .transpose()?;
        Ok(Checker {
            host: host.to_owned(),
            port,
            pinned,
            known_hosts,
            accept_new,
            lock,
            verdict: Arc::new(Mutex::new(None)),
            learned: Arc::new(Mutex::new(None)),
            accepted: Arc::new(Mutex::new(None)),
            cipher: Arc::new(Mutex::new(None)),
        })
    }

    pub(crate) fn verdict(&self) -> Arc<Mutex<Option<HostKeyError>>> {
        self.verdict.clone()
    }

    pub(crate) fn negotiated_cipher(&self) -> Arc<Mutex<Option<String>>> {
        self.cipher.clone()
    }

    pub(crate) fn learned(&self) -> Arc<Mutex<Option<String>>> {
        self.learned.clone()
    }

    pub(crate) fn accepted(&self) -> Arc<Mutex<Option<String>>> {
        self.accepted.clone()
    }

    fn label(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }

    fn check(&self, key: &PublicKey) -> Result<(), HostKeyError> {
        let actual = format!("{} {}", key.algorithm(), fingerprint(key));
        if let Some(pin) = &self.pinned {
            return if pin.key_data() == key.key_data() {
                Ok(())
            } else {
                Err(HostKeyError::PinMismatch {
                    host: self.label(),
                    expected: format!("{} {}", pin.algorithm(), fingerprint(pin)),
                    actual,
                })
            };
        }
        let file_err = |e: russh::keys::Error| HostKeyError::KnownHostsFile {
            path: self.known_hosts.clone(),
            message: e.to_string(),
        };
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        match known_hosts::check_known_hosts_path(&self.host, self.port, key, &self.known_hosts) {
            Ok(true) => Ok(()),
            Err(russh::keys::Error::KeyChanged { line }) => Err(HostKeyError::Changed {
                host: self.label(),
                actual,
                path: self.known_hosts.clone(),
                line,
            }),
            Err(e) => Err(file_err(e)),
            Ok(false) => {
                let others =
                    known_hosts::known_host_keys_path(&self.host, self.port, &self.known_hosts)
                        .map_err(file_err)?;
                if !others.is_empty() {
                    return Err(HostKeyError::OtherTypeKnown {
                        host: self.label(),
                        algorithm: key.algorithm().to_string(),
                        actual,
                        path: self.known_hosts.clone(),
                    });
                }
                if !self.accept_new {
                    return Err(HostKeyError::Unknown {
                        host: self.label(),
                        actual,
                        path: self.known_hosts.clone(),
                        pin: pin_line(key),
                    });
                }
                known_hosts::learn_known_hosts_path(&self.host, self.port, key, &self.known_hosts)
                    .map_err(file_err)?;
                *self.learned.lock().unwrap_or_else(|p| p.into_inner()) = Some(pin_line(key));
                Ok(())
            }
        }
    }
}

impl russh::client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let res = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => self.check(key),
            PublicKeyOrCertificate::Certificate(_) => {
                Err(HostKeyError::Certificate { host: self.label() })
            }
        };
        match res {
            Ok(()) => {
                if let PublicKeyOrCertificate::PublicKey { key, .. } = key {
                    *self.accepted.lock().unwrap_or_else(|p| p.into_inner()) = Some(pin_line(key));
                }
                Ok(true)
            }
            Err(e) => {
                *self.verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                Ok(false)
            }
        }
    }

    async fn kex_done(
        &mut self,
        _shared_secret: Option<&[u8]>,
        names: &russh::Names,
        _session: &mut russh::client::Session,
    ) -> Result<(), Self::Error> {
        *self.cipher.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(names.cipher.as_ref().to_owned());
        Ok(())
    }
}
