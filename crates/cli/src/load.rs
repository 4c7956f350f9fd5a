//! Reading fleet.toml: the only place the inventory meets the file system.

use camino::{Utf8Path, Utf8PathBuf};
use fleet_inventory::{Host, Inventory, ParseOptions};

use crate::args::GlobalArgs;
use crate::error::CliError;

/// Reads and parses `--file`.
pub fn inventory(global: &GlobalArgs) -> Result<Inventory, CliError> {
    let path = &global.file;
    let read_error = |source| CliError::ReadFile {
        path: path.clone(),
        source,
    };
    let source = std::fs::read_to_string(path).map_err(read_error)?;
    let absolute = path.canonicalize_utf8().map_err(read_error)?;
    let base_dir = absolute
        .parent()
        .map_or_else(|| Utf8PathBuf::from("/"), Utf8Path::to_path_buf);
    let file_name = path.as_str();
    Ok(fleet_inventory::parse(
        &source,
        &ParseOptions {
            file_name,
            base_dir: &base_dir,
            exists: &|p: &Utf8Path| p.exists(),
        },
    )?)
}

/// The hosts `--on` selects.
pub fn selected<'i>(
    inventory: &'i Inventory,
    global: &GlobalArgs,
) -> Result<Vec<&'i Host>, CliError> {
    Ok(inventory.select(global.selector().as_deref())?)
}
