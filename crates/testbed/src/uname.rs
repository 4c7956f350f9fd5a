//! A simulated host claims a Nix system (`aarch64-linux`) but runs on the deployer's CPU. What
//! reads the machine (`uname -m`, as fleet's facts script does on a host without a system yet)
//! must see the claimed one: a host whose system is of another architecture than the deployer
//! gets a `uname` that answers `-m` with it, bind-mounted over `/usr/bin/uname` in its mount
//! namespace.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Error, Result};

/// The mount line for the host's setup script, or `None` when the host's architecture is the
/// deployer's.
pub(crate) fn machine_shim(dir: &Path, system: &str) -> Result<Option<String>> {
    let arch = system.split('-').next().unwrap_or(system);
    if arch == std::env::consts::ARCH {
        return Ok(None);
    }
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    };
    let real = dir.join("uname.real");
    let shim = dir.join("uname");
    std::fs::copy("/usr/bin/uname", &real).map_err(io("copying /usr/bin/uname to", &real))?;
    let script = format!(
        "#!/bin/sh\n# fleet-testbed: this host claims to be {system}\n\
         case \"$1\" in -m | -p | -i) echo {arch}; exit 0 ;; esac\n\
         exec '{}' \"$@\"\n",
        real.display()
    );
    std::fs::write(&shim, script).map_err(io("writing", &shim))?;
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755))
        .map_err(io("setting the mode of", &shim))?;
    Ok(Some(format!(
        "mount --bind '{}' /usr/bin/uname",
        shim.display()
    )))
}
