//! `fleet hosts`: the selected hosts with every setting resolved. A table for people, an array
//! of objects with `--json`.

use std::io::Write;

use camino::{Utf8Path, Utf8PathBuf};
use fleet_inventory::Host;

use crate::args::{GlobalArgs, HostsArgs};
use crate::error::{output, CommandError};
use crate::load;

pub fn run(global: &GlobalArgs, _args: &HostsArgs) -> Result<(), CommandError> {
    let inventory = load::inventory(global)?;
    let hosts = load::selected(&inventory, global)?;
    let text = if global.json {
        let hosts = serde_json::to_value(&hosts).unwrap_or_default();
        crate::envelope::document("hosts", Some("hosts"), &crate::envelope::snake_keys(hosts))
    } else {
        let cwd = std::env::current_dir()
            .ok()
            .and_then(|d| Utf8PathBuf::from_path_buf(d).ok());
        table(&hosts, cwd.as_deref())
    };
    Ok(output(std::io::stdout().lock().write_all(text.as_bytes()))?)
}

/// A plain table with aligned columns; paths relative to `cwd` where they are under it.
pub fn table(hosts: &[&Host], cwd: Option<&Utf8Path>) -> String {
    const HEADER: [&str; 9] = [
        "NAME", "ADDRESS", "USER", "SYSTEM", "PIN", "SUDO", "BUILD", "TAGS", "CONFIG",
    ];
    let rows: Vec<[String; 9]> = hosts
        .iter()
        .map(|h| {
            let address = if h.port == 22 {
                h.address.clone()
            } else if h.address.contains(':') {
                format!("[{}]:{}", h.address, h.port)
            } else {
                format!("{}:{}", h.address, h.port)
            };
            let config = match (h.config(), h.flake()) {
                (Some(c), _) => cwd
                    .and_then(|cwd| c.strip_prefix(cwd).ok())
                    .unwrap_or(c)
                    .to_string(),
                (None, Some(f)) => format!("{}#{}", f.reference, f.attribute),
                (None, None) => String::new(),
            };
            [
                h.name.to_string(),
                address,
                h.user.clone(),
                h.system.to_string(),
                h.pin().unwrap_or("(flake)").to_owned(),
                h.sudo.as_str().to_owned(),
                h.build.as_str().to_owned(),
                h.tags
                    .iter()
                    .map(|t| format!("@{t}"))
                    .collect::<Vec<_>>()
                    .join(","),
                config,
            ]
        })
        .collect();
    crate::table::render(HEADER, &rows)
}
