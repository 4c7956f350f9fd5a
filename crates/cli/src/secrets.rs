//! `[secrets.NAME]` on the deployer: each secret's content read once (its file, or its
//! command's standard output), then handed per host to the executor, which uploads it over SSH
//! (docs/secrets.md). The content is never printed, logged or written anywhere here.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;

use camino::Utf8Path;
use fleet_executor::secrets::{HostSecret, SecretMeta, When};
use fleet_inventory::{Inventory, Secret, SecretSource, SecretWhen};
use zeroize::Zeroizing;

use crate::error::CliError;

/// The secrets of each of `hosts`, with their content, by host name. Each secret is read once,
/// and only if a selected host gets it.
pub fn for_hosts(
    inventory: &Inventory,
    hosts: &[&fleet_inventory::Host],
    dir: &Utf8Path,
) -> Result<BTreeMap<String, Vec<HostSecret>>, CliError> {
    let mut contents: BTreeMap<String, Arc<Zeroizing<Vec<u8>>>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for host in hosts {
        let mut list = Vec::new();
        for s in inventory.secrets_for(host.name.as_str()) {
            let content = match contents.get(&s.name) {
                Some(c) => c.clone(),
                None => {
                    let c = Arc::new(read(s, dir)?);
                    contents.insert(s.name.clone(), c.clone());
                    c
                }
            };
            list.push(HostSecret {
                meta: meta(s),
                when: match s.when {
                    SecretWhen::BeforeActivation => When::BeforeActivation,
                    SecretWhen::AfterActivation => When::AfterActivation,
                },
                content,
            });
        }
        out.insert(host.name.to_string(), list);
    }
    Ok(out)
}

/// What the host's manifest records of a secret.
pub fn meta(s: &Secret) -> SecretMeta {
    SecretMeta {
        name: s.name.clone(),
        dest: s.dest.to_string(),
        owner: s.owner.clone(),
        group: s.group.clone(),
        mode: s.mode,
    }
}

fn read(s: &Secret, dir: &Utf8Path) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let fail = |reason: String| CliError::Secret {
        name: s.name.clone(),
        reason,
    };
    match &s.source {
        SecretSource::File(path) => {
            let mut buf = Zeroizing::new(Vec::new());
            std::fs::File::open(path)
                .and_then(|mut f| f.read_to_end(&mut buf))
                .map_err(|e| fail(format!("{path}: {e}")))?;
            Ok(buf)
        }
        SecretSource::Command(cmd) => {
            // Its stderr is the user's terminal (a `pass` or `gpg` prompt); its stdout is the
            // content, read straight into memory that is zeroed on drop.
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| fail(format!("cannot run `sh -c`: {e}")))?;
            let mut buf = Zeroizing::new(Vec::new());
            let read = child
                .stdout
                .take()
                .map(|mut o| o.read_to_end(&mut buf))
                .transpose();
            let status = child
                .wait()
                .map_err(|e| fail(format!("waiting for its command: {e}")))?;
            read.map_err(|e| fail(format!("reading its command's output: {e}")))?;
            if !status.success() {
                return Err(fail(format!("its command `{cmd}` failed ({status})")));
            }
            Ok(buf)
        }
    }
}

/// Fills each reached host's plan with what apply would do with its secrets: the host compares
/// each secret's content with what is in place (`cmp -s`, answering only same or different) and
/// fleet's manifest there says which it placed before. A host that cannot tell gets no list.
pub async fn plan(
    plan: &mut fleet_planner::Plan,
    gathered: &crate::gather::Gathered,
    contents: &BTreeMap<String, Vec<HostSecret>>,
) {
    use fleet_executor::secrets::{self, Change};
    use fleet_planner::{SecretChange, SecretPlan};
    let empty = Vec::new();
    let asks = gathered.iter().map(|(name, reached)| {
        let list = contents.get(name.as_str()).unwrap_or(&empty);
        async move {
            let r = reached.as_ref().ok()?;
            // Nothing to compare and nothing placed before: no root needed (so `fleet plan`
            // asks no sudo password for such a host; the facts say whether the manifest exists:
            // its folder is world-readable).
            if list.is_empty() && !r.facts.secrets_manifest {
                return Some(Vec::new());
            }
            let previous = secrets::read_manifest(&r.conn, &r.privilege).await.ok()?;
            let mut out = Vec::new();
            for s in list {
                let change = match secrets::compare(&r.conn, &r.privilege, s).await.ok()? {
                    Change::Created => SecretChange::Create,
                    Change::Changed => SecretChange::Change,
                    Change::Unchanged => SecretChange::Unchanged,
                };
                out.push(SecretPlan {
                    name: s.meta.name.clone(),
                    dest: s.meta.dest.clone(),
                    change,
                });
            }
            for p in previous {
                if !list.iter().any(|s| s.meta.dest == p.dest) {
                    out.push(SecretPlan {
                        name: p.name,
                        dest: p.dest,
                        change: SecretChange::Remove,
                    });
                }
            }
            Some(out)
        }
    });
    let answers = futures::future::join_all(asks).await;
    for (host, answer) in plan.hosts.iter_mut().zip(answers) {
        if let Some(list) = answer {
            host.secrets = list;
        }
    }
}
