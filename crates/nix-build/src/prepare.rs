//! From a [`HostBuildSpec`] to what the expression needs: absolute paths, the host's own files
//! ([`crate::files`]), its search path checked, and every source in the store
//! ([`crate::sources`]).

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::BuildError;
use crate::expr::{ExprHost, VersionLabel};
use crate::files::{self, FileSet};
use crate::sources::{self, Source};
use crate::spec::{BuildEvent, BuildOptions, HostBuildSpec, PinSpec};

/// What a host needs before its sources are stored.
struct Resolved {
    pin: PinSpec,
    nix_path: Vec<(String, Utf8PathBuf)>,
    config: Utf8PathBuf,
    files: FileSet,
}

pub(crate) fn absolute(p: &Utf8Path) -> Result<Utf8PathBuf, BuildError> {
    if p.is_absolute() {
        return Ok(files::normalize(p));
    }
    let cwd = std::env::current_dir().map_err(|e| BuildError::Io {
        action: "reading the current directory for",
        path: p.to_string(),
        source: e.into(),
    })?;
    let cwd = Utf8PathBuf::from_path_buf(cwd).map_err(|p| BuildError::InvalidSpec {
        reason: format!("current directory {} is not UTF-8", p.display()),
    })?;
    Ok(files::normalize(&cwd.join(p)))
}

/// Names a configuration may look up: the pin, the configuration and fleet.toml's `nix-path`.
fn provided(spec: &HostBuildSpec, name: &str) -> bool {
    name == "nixpkgs" || name == "nixos-config" || spec.nix_path.iter().any(|(n, _)| n == name)
}

fn resolve(
    spec: &HostBuildSpec,
    fleet_dir: &Utf8Path,
    all_configs: &[Utf8PathBuf],
    opts: &BuildOptions,
) -> Result<Resolved, BuildError> {
    let config = absolute(&spec.config)?;
    if !config.is_file() {
        return Err(BuildError::InvalidSpec {
            reason: format!("configuration file {config} does not exist"),
        });
    }
    let pin = match &spec.pin {
        PinSpec::Path(p) => {
            let p = absolute(p)?;
            if !p.join("nixos").exists() {
                return Err(BuildError::InvalidSpec {
                    reason: format!("nixpkgs path {p} has no nixos/ folder"),
                });
            }
            PinSpec::Path(p)
        }
        t @ PinSpec::Tarball { .. } => t.clone(),
    };
    let mut nix_path = Vec::new();
    for (name, p) in &spec.nix_path {
        let p = absolute(p)?;
        if !p.exists() {
            return Err(BuildError::InvalidSpec {
                reason: format!("nix-path entry {name} = {p} does not exist"),
            });
        }
        nix_path.push((name.clone(), p));
    }
    let others: Vec<Utf8PathBuf> = all_configs
        .iter()
        .filter(|c| **c != config)
        .cloned()
        .collect();
    let files = files::discover(&config, fleet_dir, &others)?;
    if let Some(u) = files.search_paths.iter().find(|u| !provided(spec, &u.name)) {
        return Err(BuildError::SearchPath {
            name: u.name.clone(),
            file: u.file.to_string(),
            line: u.line,
        });
    }
    let shown = |p: &Utf8Path| {
        p.strip_prefix(fleet_dir)
            .map(|r| r.to_string())
            .unwrap_or_else(|_| p.to_string())
    };
    for n in &files.not_included {
        opts.emit(BuildEvent::Warning {
            host: spec.name.clone(),
            message: format!(
                "{}:{} reads {} on this machine; it is not in the deployment package",
                shown(&n.file),
                n.line,
                n.literal
            ),
        });
    }
    for o in &files.outside {
        opts.emit(BuildEvent::Warning {
            host: spec.name.clone(),
            message: format!(
                "{o} is outside fleet.toml's folder; the deployment package's config/ mirrors {} to hold it",
                files.root
            ),
        });
    }
    Ok(Resolved {
        pin,
        nix_path,
        config,
        files,
    })
}

/// A 40-hex-digit commit in a tarball URL (`…/archive/<rev>.tar.gz`).
pub(crate) fn url_revision(url: &str) -> Option<String> {
    url.split(['/', '?', '=', '&'])
        .map(|s| s.trim_end_matches(".tar.gz").trim_end_matches(".zip"))
        .find(|s| s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_owned)
}

/// The version label of a pin whose tree has none (see [`VersionLabel`]).
async fn label(pin: &PinSpec) -> Option<VersionLabel> {
    let revision = match pin {
        PinSpec::Tarball { url, sha256 } => match url_revision(url) {
            Some(rev) => rev,
            None => {
                return Some(VersionLabel {
                    revision: None,
                    suffix: format!(".sha256.{}", sha256.get(..8).unwrap_or(sha256)),
                })
            }
        },
        PinSpec::Path(p) if p.join(".git").exists() => sources::git_revision(p).await?,
        PinSpec::Path(_) => return None,
    };
    Some(VersionLabel {
        suffix: format!(".git.{}", &revision[..7]),
        revision: Some(revision),
    })
}

fn source_index(sources: &mut Vec<Source>, s: Source) -> usize {
    match sources.iter().position(|x| *x == s) {
        Some(i) => i,
        None => {
            sources.push(s);
            sources.len() - 1
        }
    }
}

/// Every spec ready for the expression, or why not; one result per spec, in order.
pub(crate) async fn prepare(
    specs: &[HostBuildSpec],
    opts: &BuildOptions,
) -> Vec<Result<ExprHost, BuildError>> {
    let fleet_dir = absolute(&opts.fleet_dir).unwrap_or_else(|_| opts.fleet_dir.clone());
    let configs: Vec<Utf8PathBuf> = if opts.all_configs.is_empty() {
        specs
            .iter()
            .filter_map(|s| absolute(&s.config).ok())
            .collect()
    } else {
        opts.all_configs
            .iter()
            .filter_map(|c| absolute(c).ok())
            .collect()
    };
    let mut sources = Vec::new();
    // Per spec: the resolved host and the indices of its pin, tree and nix-path sources.
    let mut planned = Vec::with_capacity(specs.len());
    for spec in specs {
        let r = resolve(spec, &fleet_dir, &configs, opts).map(|r| {
            let pin = source_index(&mut sources, Source::Pin(r.pin.clone()));
            let tree = source_index(
                &mut sources,
                Source::Tree {
                    root: r.files.root.clone(),
                    entries: r.files.entries.clone(),
                },
            );
            let extra: Vec<(String, usize)> = r
                .nix_path
                .iter()
                .map(|(n, p)| {
                    (
                        n.clone(),
                        source_index(&mut sources, Source::Path(p.clone())),
                    )
                })
                .collect();
            (r, pin, tree, extra)
        });
        planned.push(r);
    }
    let stored = sources::store(&sources, opts).await;
    // One label per pin (a `git rev-parse` for a checkout), not one per host.
    let mut labels: std::collections::BTreeMap<usize, Option<VersionLabel>> = Default::default();
    let mut out = Vec::with_capacity(specs.len());
    for (spec, p) in specs.iter().zip(planned) {
        let host = match p {
            Err(e) => Err(e),
            Ok((r, pin, tree, extra)) => {
                let get = |i: usize| stored[i].clone();
                match (get(pin), get(tree)) {
                    (Err(e), _) | (_, Err(e)) => Err(e),
                    (Ok(pin_stored), Ok(tree_stored)) => {
                        let mut search = vec![("nixpkgs".to_owned(), pin_stored.path.clone())];
                        let mut failed = None;
                        for (name, i) in extra {
                            match get(i) {
                                Ok(s) => search.push((name, s.path)),
                                Err(e) => failed = Some(e),
                            }
                        }
                        let label = if pin_stored.labelled {
                            None
                        } else if let Some(l) = labels.get(&pin) {
                            l.clone()
                        } else {
                            let l = label(&r.pin).await;
                            labels.insert(pin, l.clone());
                            l
                        };
                        match failed {
                            Some(e) => Err(e),
                            None => Ok(ExprHost {
                                system: spec.system.clone(),
                                nixpkgs: pin_stored.path,
                                tree: tree_stored.path,
                                origin: r.files.root.to_string(),
                                config_rel: r.files.relative(&r.config),
                                cross: spec.cross,
                                label,
                                search,
                            }),
                        }
                    }
                }
            }
        };
        out.push(host);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_in_archive_urls() {
        let rev = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            url_revision(&format!(
                "https://github.com/NixOS/nixpkgs/archive/{rev}.tar.gz"
            )),
            Some(rev.to_owned())
        );
        assert_eq!(
            url_revision("https://channels.nixos.org/nixos-24.05/nixexprs.tar.xz"),
            None
        );
    }
}
