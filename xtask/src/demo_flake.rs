//! The demo's flake host: pi2's system comes from a flake (`flake = "./flake#pi2"`) whose
//! `nixpkgs` input is the stand-in, while pi1 and nas keep the pin.

use std::path::Path;
use std::process::Command;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Writes `<dir>/flake/` (flake.nix with `nixosConfigurations.pi2`, pi2's configuration), locks
/// it, and points pi2 at it in `<dir>/fleet.toml`.
pub fn make(dir: &Path, standin: &Path, nix_env: &[(String, String)]) -> Result<()> {
    let flake = dir.join("flake");
    std::fs::create_dir_all(&flake)?;
    std::fs::copy(
        dir.join("pi2").join("configuration.nix"),
        flake.join("pi2.nix"),
    )?;
    std::fs::write(
        flake.join("flake.nix"),
        format!(
            "{{\n  inputs.nixpkgs.url = \"path:{}\";\n  outputs = {{ self, nixpkgs }}: {{\n    \
             nixosConfigurations.pi2 = nixpkgs.lib.nixosSystem {{\n      system = \"aarch64-linux\";\n      \
             modules = [ ./pi2.nix ];\n    }};\n  }};\n}}\n",
            standin.display()
        ),
    )?;
    let status = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command flakes",
            "flake",
            "lock",
        ])
        .current_dir(&flake)
        .envs(nix_env.iter().map(|(k, v)| (k, v)))
        .status()?;
    if !status.success() {
        return Err(format!("nix flake lock in {} failed", flake.display()).into());
    }
    let toml_path = dir.join("fleet.toml");
    let toml = std::fs::read_to_string(&toml_path)?;
    let mut out = String::new();
    let mut host = String::new();
    for line in toml.lines() {
        if let Some(name) = line
            .strip_prefix("[hosts.")
            .and_then(|l| l.strip_suffix(']'))
        {
            host = name.to_owned();
        }
        if host == "pi2" && line.starts_with("config = ") {
            out.push_str("flake = \"./flake#pi2\"\n");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    std::fs::write(toml_path, out)?;
    Ok(())
}
