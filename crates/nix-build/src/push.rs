//! Pushing built closures to a binary cache (`fleet build --to URL`, docs/scale.md), so hosts
//! with `substitute = true` fetch them from there instead of from the deployer.

use crate::error::BuildError;
use crate::nix;

/// `nix copy --to URL PATHS…`: each path with its closure (what the cache lacks), with
/// `nix_env` (e.g. `NIX_CONFIG`). `url` is any Nix store URL: `file:///srv/cache?secret-key=…`,
/// `s3://…`, `ssh://…`; signing is the URL's (`secret-key=`) or nix.conf's `secret-key-files`.
pub async fn push_to_cache(
    url: &str,
    paths: &[String],
    nix_env: &[(String, String)],
) -> Result<(), BuildError> {
    if paths.is_empty() {
        return Ok(());
    }
    let mut args: Vec<String> = [
        "--extra-experimental-features",
        "nix-command",
        "copy",
        "--to",
        url,
    ]
    .map(String::from)
    .to_vec();
    args.extend(paths.iter().cloned());
    let out = nix::run("nix", &args, nix_env).await?;
    if out.success {
        Ok(())
    } else {
        Err(BuildError::Nix {
            command: nix::display("nix", &args),
            status: out.status,
            stderr: nix::excerpt(&out.stderr),
        })
    }
}
