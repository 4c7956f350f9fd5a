//! Scaling out on Nix (docs/scale.md). fleet.toml's `[build]` for the deployer's Nix (remote
//! builders and `builders-use-substitutes`, given to Nix for fleet's own runs through
//! `NIX_CONFIG`; the user's nix.conf is never touched), and hosts with `substitute = true`:
//! asked at plan time what their substituters offer, and left to fetch it before the copy.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use fleet_executor::apply::ApplyHost;
use fleet_executor::substitute;
use fleet_executor::{error_chain, CancellationToken, EventSink, HostEvents, LogStream};
use fleet_inventory::{BuildSettings, Host};
use fleet_planner::{human_size, Plan};
use fleet_store::{PathInfo, StorePath};
use futures::StreamExt;

use crate::desired::Desired;
use crate::gather::Gathered;

/// How long a host may take to fetch from its substituters before fleet copies the rest.
const SUBSTITUTE_TIMEOUT: Duration = Duration::from_secs(600);

/// The `NIX_CONFIG` lines `[build]` adds (empty when it sets nothing). The builders replace
/// those of nix.conf for this run, as `--builders` would.
pub fn nix_config_lines(build: &BuildSettings) -> String {
    let mut s = String::new();
    if !build.builders.is_empty() {
        let lines: Vec<String> = build.builders.iter().map(|b| b.machine_line()).collect();
        s.push_str(&format!("builders = {}\n", lines.join(" ; ")));
    }
    if build.builders_use_substitutes {
        s.push_str("builders-use-substitutes = true\n");
    }
    s
}

/// `NIX_CONFIG` as fleet was given it, plus `extra` (Nix reads the later line of a setting).
pub fn with_nix_config(given: Option<String>, extra: &str) -> String {
    let mut config = given.unwrap_or_default();
    if !config.is_empty() && !config.ends_with('\n') {
        config.push('\n');
    }
    config.push_str(extra);
    config
}

/// For each reached host with `substitute = true`: which of its missing paths its own
/// substituters offer (one read-only command per host, in parallel). A host that cannot say
/// is planned as a plain copy, with a warning.
pub async fn ask_substitutable(
    gathered: &mut Gathered,
    desired: &Desired,
    hosts: &[&Host],
    parallel: usize,
    quiet: bool,
) {
    let asks = gathered.iter_mut().filter_map(|(name, r)| {
        let host = hosts.iter().find(|h| h.name.as_str() == name.as_str())?;
        let reached = r.as_mut().ok().filter(|_| host.substitute)?;
        let d = desired.get(name)?;
        let missing: BTreeSet<StorePath> = d
            .closure
            .iter()
            .filter(|c| !reached.present.contains(&c.path))
            .filter_map(|c| StorePath::new(c.path.clone()).ok())
            .collect();
        Some(async move {
            match substitute::substitutable(&reached.conn, &missing).await {
                Ok(offered) => {
                    reached.substitutable = Some(offered.into_iter().map(String::from).collect())
                }
                Err(e) if !quiet => errln!(
                    "fleet: warning: {name}: cannot ask its substituters, planning a plain copy: {}",
                    error_chain(&e)
                ),
                Err(_) => {}
            }
        })
    });
    futures::stream::iter(asks)
        .buffer_unordered(parallel.max(1))
        .collect::<Vec<()>>()
        .await;
}

/// Before the copy: each host to apply whose plan says its substituters offer paths fetches
/// them (in parallel, bounded), and its `missing` shrinks to the rest. Each host's events say
/// what came from where; nothing here fails a host.
pub async fn substitute_first(
    to_apply: &mut [ApplyHost],
    plan: &Plan,
    infos: &[PathInfo],
    parallel: usize,
    run: (Instant, EventSink, CancellationToken),
) {
    let size = |paths: &BTreeSet<StorePath>| -> u64 {
        infos
            .iter()
            .filter(|i| paths.contains(&i.path))
            .map(|i| i.nar_size)
            .sum()
    };
    let jobs = to_apply.iter_mut().filter_map(|h| {
        let offered = plan.host(&h.name)?.copy.substitute.as_ref()?;
        if offered.paths.is_empty() || h.missing.is_empty() {
            return None;
        }
        let ev = HostEvents::new(&h.name, run.0, run.1.clone(), run.2.clone());
        let cancel = run.2.clone();
        Some(async move {
            if cancel.is_cancelled() {
                return;
            }
            let _ = ev
                .log(
                    LogStream::Fleet,
                    format!(
                        "fetching up to {} of {} missing paths from the host's substituters",
                        offered.paths.len(),
                        h.missing.len()
                    ),
                )
                .await;
            let got = substitute::substitute(
                &h.conn,
                &h.privilege,
                &mut h.store,
                &h.missing,
                SUBSTITUTE_TIMEOUT,
            )
            .await;
            let fetched: BTreeSet<StorePath> = got.paths.intersection(&h.missing).cloned().collect();
            h.missing.retain(|p| !fetched.contains(p));
            let mut line = format!(
                "substituted {} path(s), {}, from the host's substituters; fleet copies {} path(s), {}",
                fetched.len(),
                human_size(size(&fetched)),
                h.missing.len(),
                human_size(size(&h.missing))
            );
            if let Some(e) = got.error {
                line.push_str(&format!(" (substitution stopped: {e})"));
            }
            let _ = ev.log(LogStream::Fleet, line).await;
        })
    });
    futures::stream::iter(jobs)
        .buffer_unordered(parallel.max(1))
        .collect::<Vec<()>>()
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_become_one_setting() {
        let inv = fleet_inventory::parse(
            "[build]\nbuilders = [\"ssh-ng://root@arm aarch64-linux - 4\", \"ssh://b\"]\nbuilders-use-substitutes = true\n",
            &fleet_inventory::ParseOptions {
                file_name: "fleet.toml",
                base_dir: camino::Utf8Path::new("/tmp"),
                exists: &|_| true,
            },
        )
        .unwrap();
        assert_eq!(
            nix_config_lines(&inv.build),
            "builders = ssh-ng://root@arm aarch64-linux - 4 - - - - ; ssh://b - - - - - - -\nbuilders-use-substitutes = true\n"
        );
        assert_eq!(nix_config_lines(&BuildSettings::default()), "");
        assert_eq!(
            with_nix_config(Some("substituters =".into()), "a = b\n"),
            "substituters =\na = b\n"
        );
    }
}
