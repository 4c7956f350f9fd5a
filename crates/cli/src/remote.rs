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
    /// for every host of the run. When not `privileged`, nobody is prompted; a
    /// `--sudo-password-command` is kept and run only if some host needs root after all.
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
            errln!("fleet: warning: {warning}");
        }
        let needing: Vec<&str> = hosts
            .iter()
            .filter(|h| h.sudo == SudoMode::Password)
            .map(|h| h.name.as_str())
            .collect();
        let sudo = if !privileged {
            // Root is needed only if reading as the login user fails (plan's store query on a
            // host without the Nix daemon): then the command runs, once; nobody is prompted.
            match &global.sudo_password_command {
                Some(cmd) if !needing.is_empty() => {
                    Some(Arc::new(SudoPasswordSource::command(cmd.clone())))
                }
                _ => None,
            }
        } else if !needing.is_empty() {
            let source = match &global.sudo_password_command {
                Some(cmd) => SudoPasswordSource::command(cmd.clone()),
                None => {
                    let prompt = format!(
                        "[fleet] sudo password for {} (asked once for this run): ",
                        needing.join(", ")
                    );
                    match term::read_secret_async(prompt).await {
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
        // x86-64 CPUs have had AES instructions for over a decade; a Pi has none.
        host_aes: host.system.as_str().starts_with("x86_64-"),
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

/// Runs `one` for each host, at most `parallel` at once, and hands each result to `shown` in
/// selection order as soon as it and those before it finished (the simple commands: `exec`,
/// `gc`). Interrupted when `cancel` fired.
pub async fn each_host<'h, T, F, Fut>(
    hosts: &[&'h Host],
    parallel: usize,
    cancel: &fleet_executor::CancellationToken,
    one: F,
    mut shown: impl FnMut(&T),
) -> Result<Vec<T>, CliError>
where
    F: Fn(&'h Host) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    use futures::StreamExt;
    let mut done = futures::stream::iter(hosts.iter().copied())
        .map(one)
        .buffered(parallel.max(1));
    let mut out = Vec::with_capacity(hosts.len());
    while let Some(r) = done.next().await {
        shown(&r);
        out.push(r);
    }
    if cancel.is_cancelled() {
        return Err(CliError::Interrupted);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(toml: &str) -> Host {
        let dir = camino::Utf8Path::new("/");
        let inv = fleet_inventory::parse(
            toml,
            &fleet_inventory::ParseOptions {
                file_name: "fleet.toml",
                base_dir: dir,
                exists: &|_| true,
            },
        )
        .unwrap();
        inv.hosts[0].clone()
    }

    #[test]
    fn only_what_fleet_toml_sets_overrides_ssh_config() {
        let base = "[pins.p]\npath = \"/p\"\n[hosts.pi1]\nsystem = \"aarch64-linux\"\nconfig = \"/c.nix\"\n";
        let t = target(&host(base));
        assert_eq!(t.name, "pi1");
        assert_eq!((t.address, t.user, t.port), (None, None, None));

        let t = target(&host(&format!(
            "{base}address = \"10.0.0.5\"\nuser = \"admin\"\nport = 2222\nhost-key = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\"\n"
        )));
        assert_eq!(t.address.as_deref(), Some("10.0.0.5"));
        assert_eq!(t.user.as_deref(), Some("admin"));
        assert_eq!(t.port, Some(2222));
        assert!(t.host_key.unwrap().starts_with("ssh-ed25519 AAAA"));

        let t = target(&host(&base.replace(
            "[pins.p]",
            "[defaults]\nuser = \"ops\"\nport = 22\n[pins.p]",
        )));
        assert_eq!((t.user.as_deref(), t.port), (Some("ops"), Some(22)));
    }
}
