//! Reaching hosts: the run's SSH connector, each host's target and privilege, and the sudo
//! password, asked at most once per run (up front, before any progress is drawn).

use std::sync::{Arc, Mutex};

use fleet_executor::{
    ConnectOptions, Connector, PassphraseFuture, Privilege, SshTarget, SudoPassword,
    SudoPasswordSource,
};
use fleet_inventory::{Host, SudoMode};

use crate::args::GlobalArgs;
use crate::error::CliError;
use crate::term;

/// What every command that talks to hosts shares for one run.
pub struct Remote {
    pub connector: Arc<Connector>,
    /// The sudo password source, when a selected host has `sudo = "password"` and the command
    /// needs root there.
    sudo: Option<Arc<SudoPasswordSource>>,
}

impl Remote {
    /// Sets up the connector. When `privileged` and a host in `hosts` needs a sudo password,
    /// the password is obtained now (from `--sudo-password-command`, else the terminal): once,
    /// for every host of the run.
    pub async fn new(
        global: &GlobalArgs,
        hosts: &[&Host],
        privileged: bool,
    ) -> Result<Remote, CliError> {
        let mut options = ConnectOptions::from_env();
        options.accept_new_host_keys = global.accept_new_host_keys;
        // fleet.toml's default user, for hosts that name none there nor in ~/.ssh/config.
        options.default_user = "root".into();
        let connector = Connector::new(options, Arc::new(tty_passphrase()))
            .map_err(|e| CliError::Ssh(e.to_string()))?;
        for warning in connector.config_warnings() {
            eprintln!("fleet: warning: {warning}");
        }
        let needing: Vec<&str> = hosts
            .iter()
            .filter(|h| h.sudo == SudoMode::Password)
            .map(|h| h.name.as_str())
            .collect();
        let sudo = if privileged && !needing.is_empty() {
            let source = match &global.sudo_password_command {
                Some(cmd) => SudoPasswordSource::command(cmd.clone()),
                None => {
                    let prompt = format!(
                        "[fleet] sudo password for {} (asked once for this run): ",
                        needing.join(", ")
                    );
                    match term::read_secret(&prompt) {
                        Ok(Some(pw)) => {
                            SudoPasswordSource::fixed(SudoPassword::new(pw.as_str().to_owned()))
                        }
                        _ => {
                            return Err(CliError::NoSudoPassword {
                                hosts: needing.join(", "),
                            })
                        }
                    }
                }
            };
            let source = Arc::new(source);
            source
                .get()
                .await
                .map_err(|e| CliError::SudoPassword(e.to_string()))?;
            Some(source)
        } else {
            None
        };
        Ok(Remote {
            connector: Arc::new(connector),
            sudo,
        })
    }

    /// How to become root on `host`. Hosts with `sudo = "password"` in a run that asked no
    /// password (an unprivileged command) get `sudo -n`, which fails cleanly instead of hanging.
    pub fn privilege(&self, host: &Host) -> Privilege {
        match host.sudo {
            SudoMode::None => Privilege::None,
            SudoMode::Passwordless => Privilege::Passwordless,
            SudoMode::Password => match &self.sudo {
                Some(s) => Privilege::Password(s.clone()),
                None => Privilege::Passwordless,
            },
        }
    }
}

/// The SSH target of an inventory host. `address`, `user` and `port` are passed only where
/// fleet.toml sets them, so `~/.ssh/config` (`HostName`, `User`, `Port`) fills the rest.
pub fn target(host: &Host) -> SshTarget {
    let set = host.set_in_file;
    SshTarget {
        name: host.name.to_string(),
        address: set.address.then(|| host.address.clone()),
        port: set.port.then_some(host.port),
        user: Some(host.user.clone()).filter(|_| set.user),
        identity_file: host.identity_file.as_ref().map(|p| p.clone().into()),
        host_key: host.host_key.clone(),
        known_hosts: host.known_hosts.as_ref().map(|p| p.clone().into()),
        proxy_jump: None,
    }
}

/// Asks for identity-file passphrases on the terminal, one prompt at a time.
fn tty_passphrase() -> impl Fn(&std::path::Path) -> PassphraseFuture + Send + Sync {
    let lock = Arc::new(Mutex::new(()));
    move |key: &std::path::Path| {
        let (lock, key) = (lock.clone(), key.display().to_string());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let _one_at_a_time = lock.lock().unwrap_or_else(|e| e.into_inner());
                term::read_secret(&format!("[fleet] passphrase for {key}: "))
                    .ok()
                    .flatten()
            })
            .await
            .ok()
            .flatten()
        })
    }
}
