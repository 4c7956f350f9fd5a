//! `fleet add NAME --address A [--system S] [--user U]`: adds an existing NixOS machine to
//! fleet.toml.
//!
//! 1. Connects once. The host's key is shown (algorithm and SHA-256 fingerprint) and, once
//!    accepted (a question on a terminal, or `--yes`), trusted for this connection only:
//!    nothing is written to known_hosts; fleet.toml pins it (`host-key`) instead.
//! 2. Runs `nixos-generate-config --show-hardware-config` there and writes the result to
//!    `hardware-configuration.nix` next to the host's configuration (`hosts/NAME/`, or where
//!    `[defaults] config` puts it), plus a starting `configuration.nix` when there is none.
//! 3. Adds the `[hosts.NAME]` table to fleet.toml with `toml_edit`: comments and layout of the
//!    rest are kept. A host of that name already there is refused before anything is done;
//!    the new file is checked with the inventory parser before it replaces the old one.

use camino::{Utf8Path, Utf8PathBuf};
use fleet_executor::{ConnectError, HostKeyError, Privilege, SshTarget, Stdin};
use fleet_inventory::{HostName, System};

use crate::args::{AddArgs, GlobalArgs};
use crate::error::{CliError, CommandError};
use crate::remote::Remote;
use crate::{exit, signals, term};

/// What the host told us.
struct Probed {
    /// `ssh-ed25519 AAAA…` for fleet.toml's `host-key`.
    pin: String,
    hardware: String,
    system: String,
    /// `24.05` from `nixos-version`, for `system.stateVersion`.
    release: Option<String>,
}

pub fn run(global: &GlobalArgs, args: &AddArgs) -> Result<u8, CommandError> {
    let name = HostName::new(args.name.clone()).map_err(|e| add_error(e.to_string()))?;
    if let Some(s) = &args.system {
        System::new(s.clone()).map_err(|e| add_error(e.to_string()))?;
    }
    let path = &global.file;
    let text = std::fs::read_to_string(path).map_err(|source| CliError::ReadFile {
        path: path.clone(),
        source,
    })?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| add_error(format!("{path} is not valid TOML: {e}")))?;
    if doc
        .get("hosts")
        .and_then(|h| h.get(name.as_str()))
        .is_some()
    {
        return Err(add_error(format!(
            "{path} has a host `{name}` already; nothing was changed"
        ))
        .into());
    }
    let dir = crate::desired::fleet_dir(path);
    // Where the configuration goes: `[defaults] config` with `{name}`, else hosts/NAME/.
    let default_config = doc
        .get("defaults")
        .and_then(|d| d.get("config"))
        .and_then(|c| c.as_str())
        .map(|c| c.replace("{name}", name.as_str()));
    let config_rel = default_config
        .clone()
        .unwrap_or_else(|| format!("hosts/{name}/configuration.nix"));
    let config_path = if Utf8Path::new(&config_rel).is_absolute() {
        Utf8PathBuf::from(&config_rel)
    } else {
        dir.join(&config_rel)
    };
    let host_dir = config_path
        .parent()
        .map_or_else(|| dir.clone(), Utf8Path::to_path_buf);

    // `[defaults] identity-file`, as the new host will inherit it.
    let identity_file = doc
        .get("defaults")
        .and_then(|d| d.get("identity-file"))
        .and_then(|c| c.as_str())
        .map(|f| {
            let f = Utf8Path::new(f);
            if f.is_absolute() {
                f.to_path_buf()
            } else {
                dir.join(f)
            }
        });
    let probed = signals::runtime()?.block_on(probe(global, args, name.as_str(), identity_file))?;
    let system = args.system.clone().unwrap_or(probed.system.clone());

    // The host's files.
    let write = |p: &Utf8Path, text: &str| {
        std::fs::create_dir_all(&host_dir)
            .and_then(|()| std::fs::write(p, text))
            .map_err(|source| CliError::WriteFile {
                path: p.to_owned(),
                source,
            })
    };
    let hardware_path = host_dir.join("hardware-configuration.nix");
    write(&hardware_path, &probed.hardware)?;
    errln!("fleet: wrote {hardware_path} (from nixos-generate-config on {name})");
    if !config_path.exists() {
        write(&config_path, &starting_config(name.as_str(), &probed))?;
        errln!("fleet: wrote a starting {config_path}: merge the machine's /etc/nixos/configuration.nix into it before the first apply");
    }

    // The table.
    let mut table = toml_edit::Table::new();
    table.insert("address", toml_edit::value(args.address.as_str()));
    table.insert("system", toml_edit::value(system.as_str()));
    if let Some(u) = &args.user {
        table.insert("user", toml_edit::value(u.as_str()));
    }
    if let Some(port) = args.port {
        table.insert("port", toml_edit::value(i64::from(port)));
    }
    if default_config.is_none() {
        table.insert("config", toml_edit::value(config_rel.as_str()));
    }
    table.insert("host-key", toml_edit::value(probed.pin.as_str()));
    let hosts = doc
        .entry("hosts")
        .or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            toml_edit::Item::Table(t)
        })
        .as_table_mut()
        .ok_or_else(|| add_error(format!("`hosts` in {path} is not a table")))?;
    hosts.insert(name.as_str(), toml_edit::Item::Table(table));
    let new_text = doc.to_string();
    let absolute = path
        .canonicalize_utf8()
        .map_err(|source| CliError::ReadFile {
            path: path.clone(),
            source,
        })?;
    let base_dir = absolute
        .parent()
        .map_or_else(|| Utf8PathBuf::from("/"), Utf8Path::to_path_buf);
    fleet_inventory::parse(
        &new_text,
        &fleet_inventory::ParseOptions {
            file_name: path.as_str(),
            base_dir: &base_dir,
            exists: &|p: &Utf8Path| p.exists(),
        },
    )?;
    let tmp = absolute.with_extension("toml.fleet-add");
    std::fs::write(&tmp, &new_text)
        .and_then(|()| std::fs::rename(&tmp, &absolute))
        .map_err(|source| CliError::WriteFile {
            path: path.clone(),
            source,
        })?;
    errln!("fleet: added [hosts.{name}] to {path}; next: `fleet plan --on {name}`");
    Ok(exit::OK)
}

/// Connects (the key accepted for this connection only) and reads what the host has.
async fn probe(
    global: &GlobalArgs,
    args: &AddArgs,
    name: &str,
    identity_file: Option<Utf8PathBuf>,
) -> Result<Probed, CliError> {
    let remote = Remote::new(global, &[], false).await?;
    let mut target = SshTarget {
        name: name.to_owned(),
        address: Some(args.address.clone()),
        port: args.port,
        user: args.user.clone(),
        identity_file: identity_file.map(Into::into),
        host_key: None,
        // Nothing is known: the host's key always comes back as unknown, with its pin line.
        known_hosts: Some("/dev/null".into()),
        proxy_jump: None,
        host_aes: false,
    };
    let unreachable = |e: &(dyn std::error::Error + 'static)| {
        add_error(format!(
            "cannot reach {} ({}): {}",
            name,
            args.address,
            fleet_executor::error_chain(e)
        ))
    };
    let (pin, fingerprint) = match remote.connector.connect(&target).await {
        Err(ConnectError::HostKey(HostKeyError::Unknown { pin, actual, .. })) => (pin, actual),
        Err(e) => return Err(unreachable(&e)),
        Ok(_) => return Err(add_error("the host's key could not be read".into())),
    };
    errln!(
        "fleet: {name} ({}) presents the host key {fingerprint}",
        args.address
    );
    if !args.yes {
        if !term::stdin_is_tty() {
            return Err(add_error(format!(
                "the host key of {name} is not trusted yet: check {fingerprint} (on the machine: \
                 `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), then run again with --yes"
            )));
        }
        if !term::confirm_async("Is this the key of the machine you mean to add?".into()).await {
            return Err(add_error(
                "the host key was not accepted; nothing was changed".into(),
            ));
        }
    }
    target.host_key = Some(pin.clone());
    let conn = remote
        .connector
        .connect(&target)
        .await
        .map_err(|e| unreachable(&e))?;
    let run = |cmd: &'static str| {
        let conn = &conn;
        async move {
            conn.exec(cmd, &Privilege::None, Stdin::None)
                .await
                .map_err(|e| add_error(fleet_executor::error_chain(&e)))
        }
    };
    let hw =
        run("PATH=/run/current-system/sw/bin:$PATH nixos-generate-config --show-hardware-config")
            .await?;
    if !hw.success() || hw.stdout.is_empty() {
        conn.close().await;
        return Err(add_error(format!(
            "`nixos-generate-config --show-hardware-config` failed on {name} (is it NixOS?): {}",
            hw.stderr_lossy().trim()
        )));
    }
    let facts =
        run("uname -m; PATH=/run/current-system/sw/bin:$PATH nixos-version 2>/dev/null || true")
            .await?;
    conn.close().await;
    let facts = facts.stdout_lossy();
    let mut lines = facts.lines();
    let system = match lines.next().unwrap_or("").trim() {
        "aarch64" | "arm64" => "aarch64-linux",
        "armv7l" | "armv6l" => "armv7l-linux",
        "i686" | "i386" => "i686-linux",
        _ => "x86_64-linux",
    }
    .to_owned();
    let release = lines.next().and_then(|v| {
        let mut parts = v.trim().split('.');
        match (parts.next(), parts.next()) {
            (Some(a), Some(b)) if !a.is_empty() && a.chars().all(|c| c.is_ascii_digit()) => {
                Some(format!("{a}.{}", &b[..b.len().min(2)]))
            }
            _ => None,
        }
    });
    Ok(Probed {
        pin,
        hardware: hw.stdout_lossy(),
        system,
        release,
    })
}

fn starting_config(name: &str, p: &Probed) -> String {
    let state = p.release.as_deref().unwrap_or("24.05");
    format!(
        r#"# {name}: written by `fleet add`. fleet builds this file as nixos-rebuild builds
# /etc/nixos/configuration.nix, and the first `fleet apply` replaces what the machine runs with
# it: copy over what the machine's own /etc/nixos/configuration.nix sets (boot loader, users,
# services) first, and check `fleet plan --on {name}`.
{{ config, lib, pkgs, ... }}:

{{
  imports = [ ./hardware-configuration.nix ];

  networking.hostName = "{name}";

  # fleet deploys over SSH: keep a way in.
  services.openssh.enable = true;

  # The release the machine was installed with (from nixos-version); do not change it later.
  system.stateVersion = "{state}";
}}
"#
    )
}

fn add_error(message: String) -> CliError {
    CliError::Add(message)
}
