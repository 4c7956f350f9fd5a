//! What a relayed copy owns for its run (docs/relay.md): the one-off key (made in memory, the
//! private half zeroed when dropped), the cleanups it owes on the relay and the hosts, and the
//! address the hosts see the relay's connections come from.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::PrivateKey;
use zeroize::Zeroizing;

use crate::sudo::Privilege;
use crate::{Connection, Stdin};

/// Cleanups still owed on hosts (the `authorized_keys` line, the FIFO, the relay's folder).
/// Each relayed copy runs its own as it goes; what a cancelled copy left is run by
/// [`Cleanups::run_all`], which the apply calls at its end.
#[derive(Clone, Default)]
pub struct Cleanups(Arc<Mutex<Vec<Owed>>>);

/// One cleanup owed: its key, the connection it runs over, the script.
type Owed = (u64, Arc<Connection>, String);

static NEXT: AtomicU64 = AtomicU64::new(0);

impl Cleanups {
    pub(super) fn add(&self, conn: &Arc<Connection>, script: String) -> u64 {
        let key = NEXT.fetch_add(1, Ordering::Relaxed);
        self.lock().push((key, conn.clone(), script));
        key
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Owed>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs (once) the cleanup registered as `key`; best effort.
    pub(super) async fn run(&self, key: u64) {
        let found = {
            let mut v = self.lock();
            v.iter().position(|(k, ..)| *k == key).map(|i| v.remove(i))
        };
        if let Some((_, conn, script)) = found {
            let _ = conn.exec(&script, &Privilege::None, Stdin::None).await;
        }
    }

    /// Runs (once) every cleanup still owed over `conn` (before it closes).
    pub async fn run_on(&self, conn: &Arc<Connection>) {
        let mine: Vec<Owed> = {
            let mut v = self.lock();
            let (mine, rest) = std::mem::take(&mut *v)
                .into_iter()
                .partition(|(_, c, _)| Arc::ptr_eq(c, conn));
            *v = rest;
            mine
        };
        for (_, conn, script) in mine {
            let _ = conn.exec(&script, &Privilege::None, Stdin::None).await;
        }
    }

    /// Runs every cleanup still owed (best effort, all at once).
    pub async fn run_all(&self) {
        let left: Vec<_> = std::mem::take(&mut *self.lock());
        futures::future::join_all(left.into_iter().map(|(_, conn, script)| async move {
            let _ = conn.exec(&script, &Privilege::None, Stdin::None).await;
        }))
        .await;
    }

    /// How many are still owed.
    pub fn pending(&self) -> usize {
        self.lock().len()
    }
}

/// The run's one-off key: the OpenSSH private key (zeroed when dropped) and the public line.
pub(super) struct OneOffKey {
    pub(super) private: Zeroizing<String>,
    pub(super) public: String,
}

impl OneOffKey {
    pub(super) fn new() -> Result<Self, String> {
        let mut seed = Zeroizing::new([0u8; 32]);
        {
            use std::io::Read;
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut seed[..]))
                .map_err(|e| format!("no randomness for the relay's key: {e}"))?;
        }
        let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
        let private = key
            .to_openssh(LineEnding::LF)
            .map_err(|e| format!("encoding the relay's key: {e}"))?;
        let mut public = key.public_key().clone();
        public.set_comment("");
        let public = public
            .to_openssh()
            .map_err(|e| format!("encoding the relay's key: {e}"))?;
        Ok(OneOffKey {
            private,
            public: public.trim().to_owned(),
        })
    }
}

/// The address the hosts see the relay's connections come from (`from=` of the line): the
/// address fleet reaches the relay at, resolved here if it is a name (docs/relay.md: the
/// relay must be reached at its LAN address).
pub async fn relay_source_address(relay: &Connection) -> String {
    let r = relay.resolved();
    if r.host.parse::<IpAddr>().is_ok() {
        return r.host.clone();
    }
    match tokio::net::lookup_host((r.host.as_str(), r.port)).await {
        Ok(mut addrs) => addrs
            .next()
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|| r.host.clone()),
        Err(_) => r.host.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_gets_a_fresh_ed25519_key() {
        let a = OneOffKey::new().unwrap();
        let b = OneOffKey::new().unwrap();
        assert!(a.public.starts_with("ssh-ed25519 AAAA"), "{}", a.public);
        assert_eq!(a.public.split(' ').count(), 2, "no comment: {}", a.public);
        assert_ne!(a.public, b.public);
        let private = PrivateKey::from_openssh(a.private.as_bytes()).unwrap();
        assert!(!private.is_encrypted());
        let mut public = private.public_key().clone();
        public.set_comment("");
        assert_eq!(public.to_openssh().unwrap(), a.public);
    }
}
