//! Flake hosts: `nixosConfigurations.<attribute>` of a flake, evaluated through the `nix`
//! command with the experimental features enabled per call (the user's nix.conf is not touched).
//!
//! Per flake (and `impure` setting): one `nix flake metadata --json` (Nix copies the flake's
//! source to the store: a git flake's tracked files only; the lock and revision), then one
//! `nix eval --json --expr` of all its hosts, through `builtins.getFlake` of that store copy
//! locked by its NAR hash, so every host of a flake sees the very source that goes into its
//! deployment package. A host whose attribute is missing gets the flake's attributes and a
//! "did you mean"; when the evaluation of several hosts fails, each is evaluated alone.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::BuildError;
use crate::eval::Evaluated;
use crate::expr::nix_string;
use crate::nix;
use crate::spec::{BuildEvent, BuildOptions, FlakeLock, FlakeSpec, HostBuildSpec, LockedInput};

const SWITCH_TEMPLATE: &str = include_str!("templates/switch.sh");
const README_TEMPLATE: &str = include_str!("templates/flake-README.md");
const PACKAGE_BUILDER: &str = include_str!("templates/flake-package-builder.sh");

/// The arguments every `nix` command fleet runs for flakes starts with.
pub(crate) fn nix_args(impure: bool) -> Vec<String> {
    let mut a: Vec<String> = [
        "--extra-experimental-features",
        "nix-command flakes",
        "--option",
        "nix-path",
        "",
    ]
    .map(str::to_owned)
    .to_vec();
    if impure {
        a.push("--impure".into());
    }
    a
}

/// A flake as `nix flake metadata` describes it.
#[derive(Debug, Clone)]
pub(crate) struct Metadata {
    /// The store copy of the flake's source.
    pub path: String,
    pub lock: FlakeLock,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMetadata {
    path: String,
    #[serde(default)]
    revision: Option<String>,
    #[serde(default)]
    last_modified: Option<u64>,
    locked: RawLocked,
    #[serde(default)]
    locks: Option<RawLocks>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawLocked {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    nar_hash: Option<String>,
    #[serde(default)]
    rev: Option<String>,
    #[serde(default)]
    last_modified: Option<u64>,
}

#[derive(Deserialize)]
struct RawLocks {
    nodes: BTreeMap<String, RawNode>,
    root: String,
}

#[derive(Deserialize)]
struct RawNode {
    #[serde(default)]
    inputs: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    locked: Option<RawLocked>,
}

/// Parses `nix flake metadata --json`.
pub(crate) fn parse_metadata(reference: &str, json: &str) -> Result<Metadata, BuildError> {
    let raw: RawMetadata = serde_json::from_str(json).map_err(|e| BuildError::Output {
        command: "nix flake metadata --json".into(),
        detail: format!("{e}: {}", json.trim()),
    })?;
    let nar_hash = raw
        .locked
        .nar_hash
        .clone()
        .ok_or_else(|| BuildError::Output {
            command: "nix flake metadata --json".into(),
            detail: format!("no narHash for {reference}"),
        })?;
    let mut inputs = BTreeMap::new();
    if let Some(locks) = &raw.locks {
        if let Some(root) = locks.nodes.get(&locks.root) {
            for (name, target) in &root.inputs {
                // A plain node name, or a `follows` path (a list): the last node it names.
                let node = match target {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Array(path) => {
                        follow(locks, path.iter().filter_map(|v| v.as_str()))
                    }
                    _ => None,
                };
                let Some(locked) = node
                    .and_then(|n| locks.nodes.get(&n))
                    .and_then(|n| n.locked.as_ref())
                else {
                    continue;
                };
                inputs.insert(
                    name.clone(),
                    LockedInput {
                        revision: locked.rev.clone(),
                        nar_hash: locked.nar_hash.clone(),
                        last_modified: locked.last_modified,
                    },
                );
            }
        }
    }
    let revision = raw.revision.or(raw.locked.rev.clone());
    Ok(Metadata {
        path: raw.path,
        lock: FlakeLock {
            reference: reference.to_owned(),
            dirty: raw.locked.kind == "git" && revision.is_none(),
            revision,
            nar_hash,
            last_modified: raw.last_modified.or(raw.locked.last_modified),
            inputs,
        },
    })
}

/// The node a `follows` path (`["nixpkgs"]`, `["a", "nixpkgs"]`) ends at, from the root.
fn follow<'a>(locks: &RawLocks, path: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut node = locks.root.clone();
    for step in path {
        let next = locks.nodes.get(&node)?.inputs.get(step)?;
        node = match next {
            serde_json::Value::String(s) => s.clone(),
            _ => return None,
        };
    }
    Some(node)
}

/// A flake reference that locks exactly the store copy (`path:/nix/store/…?narHash=…`).
fn locked_store_ref(m: &Metadata) -> String {
    let hash: String = m
        .lock
        .nar_hash
        .chars()
        .map(|c| match c {
            '+' => "%2B".to_owned(),
            '/' => "%2F".to_owned(),
            '=' => "%3D".to_owned(),
            c => c.to_string(),
        })
        .collect();
    format!("path:{}?narHash={hash}", m.path)
}

/// The expression for the hosts (`attribute`s) of one flake: `{ names; hosts = [ … ]; }` with
/// per host what [`Evaluated`] reads, or `{ missing = true; }`.
pub(crate) fn expression(m: &Metadata, attributes: &[String]) -> String {
    let attrs: Vec<String> = attributes.iter().map(|a| nix_string(a)).collect();
    format!(
        r#"let
  flake = builtins.getFlake {flake};
  configs = flake.nixosConfigurations or {{ }};
  switchTemplate = builtins.toFile "fleet-switch" {switch};
  readmeTemplate = builtins.toFile "fleet-README.md" {readme};
  builderScript = builtins.toFile "fleet-flake-package-builder.sh" {builder};
  # Every locked input's source, inputs of inputs too: the package refers to them all, so
  # they are copied with it and the host resolves flake.lock without the network.
  inputsOf = f: builtins.concatMap (n:
    let i = f.inputs.${{n}}; in [ i.outPath ] ++ (if i ? inputs then inputsOf i else [ ]))
    (builtins.attrNames (f.inputs or {{ }}));
  inputs = inputsOf flake;
  host = attr:
    if !(configs ? ${{attr}}) then {{
      missing = true; alone = false; hostPlatform = null;
      toplevel = ""; toplevelOut = ""; package = ""; packageOut = "";
    }} else
    let
      nixos = configs.${{attr}};
      cfg = nixos.config;
      platform =
        let p = builtins.tryEval (
          let h = cfg.nixpkgs.hostPlatform or null; in
          if h == null then null else if builtins.isString h then h else h.system or null);
        in if p.success then p.value else null;
      toplevel = cfg.system.build.toplevel;
      path =
        if nixos ? pkgs && nixos.pkgs ? runCommandLocal
        then "${{nixos.pkgs.buildPackages.coreutils}}/bin:${{nixos.pkgs.buildPackages.gnused}}/bin"
        else "/usr/bin:/bin";
      package = derivation {{
        name = "fleet-deployment";
        system = toplevel.system;
        builder = "/bin/sh";
        args = [ builderScript ];
        PATH = path;
        flake = flake.outPath;
        inherit attr inputs toplevel switchTemplate readmeTemplate;
      }};
    in {{
      missing = false;
      alone = false;
      hostPlatform = platform;
      toplevel = toplevel.drvPath;
      toplevelOut = toplevel.outPath;
      package = package.drvPath;
      packageOut = package.outPath;
    }};
in {{ names = builtins.attrNames configs; hosts = map host [ {attrs} ]; }}
"#,
        flake = nix_string(&locked_store_ref(m)),
        switch = nix_string(SWITCH_TEMPLATE),
        readme = nix_string(README_TEMPLATE),
        builder = nix_string(PACKAGE_BUILDER),
        attrs = attrs.join(" "),
    )
}

#[derive(Deserialize)]
struct RawResult {
    names: Vec<String>,
    hosts: Vec<RawHost>,
}

#[derive(Deserialize)]
struct RawHost {
    missing: bool,
    #[serde(flatten)]
    evaluated: Evaluated,
}

/// `nix flake metadata --json` of a reference; a flake whose copy has no `flake.lock` is an
/// error (a git flake's new lock file that is not `git add`ed is not in the copy).
pub(crate) async fn metadata(
    flake: &FlakeSpec,
    opts: &BuildOptions,
) -> Result<Metadata, BuildError> {
    let mut args = nix_args(flake.impure);
    args.extend(["flake", "metadata", "--json"].map(str::to_owned));
    args.push(flake.reference.clone());
    let out = nix::run("nix", &args, &opts.nix_env).await?;
    if !out.success {
        return Err(BuildError::Eval {
            stderr: format!(
                "reading the flake {} failed:\n{}",
                flake.reference,
                nix::excerpt(&out.stderr)
            ),
        });
    }
    let m = parse_metadata(&flake.reference, &out.stdout)?;
    if !std::path::Path::new(&m.path).join("flake.lock").exists() {
        return Err(BuildError::InvalidSpec {
            reason: format!(
                "the flake {} has no flake.lock in what Nix copies of it: run `nix flake lock` (and `git add flake.lock` in a git repository)",
                flake.reference
            ),
        });
    }
    Ok(m)
}

/// One `nix eval` of `attributes` of a flake.
async fn eval_once(
    flake: &FlakeSpec,
    m: &Metadata,
    attributes: &[String],
    opts: &BuildOptions,
) -> Result<Vec<Result<Evaluated, BuildError>>, BuildError> {
    let mut args = nix_args(flake.impure);
    args.extend(["eval", "--json", "--expr"].map(str::to_owned));
    args.push(expression(m, attributes));
    let out = nix::run("nix", &args, &opts.nix_env).await?;
    if !out.success {
        return Err(BuildError::Eval {
            stderr: nix::excerpt(&out.stderr).replace(&m.path, &flake.reference),
        });
    }
    let raw: RawResult =
        serde_json::from_str(out.stdout.trim()).map_err(|e| BuildError::Output {
            command: "nix eval --json".into(),
            detail: format!("{e}: {}", out.stdout.trim()),
        })?;
    if raw.hosts.len() != attributes.len() {
        return Err(BuildError::Output {
            command: "nix eval --json".into(),
            detail: format!("{} results for {} hosts", raw.hosts.len(), attributes.len()),
        });
    }
    Ok(raw
        .hosts
        .into_iter()
        .zip(attributes)
        .map(|(h, attr)| match (h.missing, h.evaluated) {
            (false, mut ev) => {
                ev.flake = Some(m.lock.clone());
                Ok(ev)
            }
            _ => Err(BuildError::FlakeAttribute {
                flake: flake.reference.clone(),
                attribute: attr.clone(),
                suggestion: closest(attr, &raw.names),
                available: raw.names.clone(),
            }),
        })
        .collect())
}

/// Evaluate flake hosts (every spec has `flake`): one metadata and one evaluation per flake,
/// each host alone when that fails. One result per spec, in order.
pub(crate) async fn evaluate(
    specs: &[&HostBuildSpec],
    opts: &BuildOptions,
) -> Vec<Result<Evaluated, BuildError>> {
    let mut out: Vec<Option<Result<Evaluated, BuildError>>> = specs.iter().map(|_| None).collect();
    let mut groups: Vec<(&FlakeSpec, Vec<usize>)> = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let Some(f) = &s.flake else {
            out[i] = Some(Err(BuildError::InvalidSpec {
                reason: format!("{} is not a flake host", s.name),
            }));
            continue;
        };
        match groups
            .iter_mut()
            .find(|(g, _)| g.reference == f.reference && g.impure == f.impure)
        {
            Some((_, v)) => v.push(i),
            None => groups.push((f, vec![i])),
        }
    }
    for (flake, indices) in groups {
        let names: Vec<String> = indices.iter().map(|&i| specs[i].name.clone()).collect();
        opts.emit(BuildEvent::EvalStarted {
            hosts: names.clone(),
        });
        let results = match metadata(flake, opts).await {
            Err(e) => indices.iter().map(|_| Err(e.clone())).collect(),
            Ok(m) => {
                let attrs: Vec<String> = indices
                    .iter()
                    .map(|&i| {
                        specs[i]
                            .flake
                            .as_ref()
                            .map_or_else(String::new, |f| f.attribute.clone())
                    })
                    .collect();
                match eval_once(flake, &m, &attrs, opts).await {
                    Ok(r) => r,
                    Err(e) if attrs.len() == 1 => vec![Err(e)],
                    Err(_) => {
                        opts.emit(BuildEvent::EvalBatchFailed {
                            hosts: names.clone(),
                        });
                        let mut r = Vec::new();
                        for a in &attrs {
                            r.push(
                                eval_once(flake, &m, std::slice::from_ref(a), opts)
                                    .await
                                    .and_then(|mut v| v.remove(0)),
                            );
                        }
                        r
                    }
                }
            }
        };
        let failed = names
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_err())
            .map(|(n, _)| n.clone())
            .collect();
        for (i, r) in indices.into_iter().zip(results) {
            out[i] = Some(r);
        }
        opts.emit(BuildEvent::EvalFinished {
            hosts: names,
            failed,
        });
    }
    out.into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(BuildError::Output {
                    command: "nix eval".into(),
                    detail: "no result for host".into(),
                })
            })
        })
        .collect()
}

/// The closest of `names` to `written` (edit distance at most a third of its length, ≥ 1).
pub(crate) fn closest(written: &str, names: &[String]) -> Option<String> {
    let distance = |a: &str, b: &str| {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    };
    let limit = (written.chars().count() / 3).max(1);
    names
        .iter()
        .map(|n| (distance(written, n), n))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const METADATA: &str = r#"{"lastModified":1796010042,"locked":{"lastModified":1796010042,"narHash":"sha256-LZ1e+zb/4=","path":"/tmp/fl","type":"path"},"locks":{"nodes":{"dep":{"locked":{"lastModified":1,"narHash":"sha256-VH2=","path":"./dep","type":"path"},"original":{"path":"./dep","type":"path"}},"nixpkgs":{"locked":{"lastModified":1700000000,"narHash":"sha256-N=","rev":"abc","type":"git","url":"file:///n"}},"root":{"inputs":{"dep":"dep","nixpkgs":"nixpkgs","np2":["dep"]}}},"root":"root","version":7},"path":"/nix/store/cn6y3m1wx82whfqyzgpjy1l82jdrc93v-source","url":"path:/tmp/fl?narHash=x"}"#;

    #[test]
    fn metadata_gives_the_lock_and_its_inputs() {
        let m = parse_metadata(".", METADATA).unwrap();
        assert_eq!(m.path, "/nix/store/cn6y3m1wx82whfqyzgpjy1l82jdrc93v-source");
        assert_eq!(m.lock.nar_hash, "sha256-LZ1e+zb/4=");
        assert!(!m.lock.dirty);
        assert_eq!(m.lock.revision, None);
        assert_eq!(m.lock.inputs["nixpkgs"].revision.as_deref(), Some("abc"));
        assert_eq!(m.lock.inputs["dep"].last_modified, Some(1));
        assert_eq!(m.lock.inputs["np2"], m.lock.inputs["dep"]);
        assert_eq!(
            locked_store_ref(&m),
            "path:/nix/store/cn6y3m1wx82whfqyzgpjy1l82jdrc93v-source?narHash=sha256-LZ1e%2Bzb%2F4%3D"
        );
        let e = expression(&m, &["a b".into()]);
        assert!(e.contains(r#"map host [ "a b" ]"#), "{e}");
    }

    #[test]
    fn a_dirty_git_tree_has_no_revision() {
        let json = r#"{"locked":{"type":"git","narHash":"sha256-x","lastModified":5},"path":"/nix/store/x-source"}"#;
        let m = parse_metadata("git+file:///f", json).unwrap();
        assert!(m.lock.dirty);
        let json = r#"{"revision":"0123","locked":{"type":"git","rev":"0123","narHash":"sha256-x"},"path":"/nix/store/x-source"}"#;
        let m = parse_metadata("git+file:///f", json).unwrap();
        assert!(!m.lock.dirty);
        assert_eq!(m.lock.revision.as_deref(), Some("0123"));
    }

    #[test]
    fn flakes_enabled_per_call_impure_only_when_asked() {
        let pure = nix_args(false);
        assert_eq!(
            pure[..2],
            [
                "--extra-experimental-features".to_owned(),
                "nix-command flakes".to_owned()
            ]
        );
        assert!(pure.windows(3).any(|w| w == ["--option", "nix-path", ""]));
        assert!(!pure.contains(&"--impure".to_owned()));
        assert!(nix_args(true).contains(&"--impure".to_owned()));
    }

    #[test]
    fn suggestions() {
        let names = vec!["nas".to_owned(), "raspberry".to_owned()];
        assert_eq!(closest("raspbery", &names).as_deref(), Some("raspberry"));
        assert_eq!(closest("web", &names), None);
        let e = BuildError::FlakeAttribute {
            flake: "/f".into(),
            attribute: "raspbery".into(),
            available: names.clone(),
            suggestion: closest("raspbery", &names),
        };
        let text = e.to_string();
        assert!(text.contains("it has: nas, raspberry"), "{text}");
        assert!(text.contains("did you mean `raspberry`?"), "{text}");
    }
}
