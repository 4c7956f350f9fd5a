//! `fleet status`: per host, over one connection each and in parallel: reachable or why not,
//! the current, booted and profile systems, whether it runs what fleet.toml wants (evaluated
//! here, not built; `--no-eval` skips that), whether it needs a reboot, and what fleet recorded
//! at the last apply. Exit 1 when a host could not be reached.

use std::fmt::Write as _;
use std::io::Write;

use fleet_executor::{error_chain, CancellationToken};
use fleet_planner::short_path;
use serde::Serialize;

use crate::args::{GlobalArgs, StatusArgs};
use crate::desired::{build_options, build_spec, fleet_dir};
use crate::error::{output, CliError, CommandError};
use crate::events::Events;
use crate::gather::{self, Want};
use crate::remote::Remote;
use crate::{exit, load, signals};

/// One host's status (also the `--json` shape).
#[derive(Debug, Serialize)]
struct Status {
    name: fleet_types::HostName,
    reachable: bool,
    /// Why the host could not be reached.
    error: Option<String>,
    current: Option<String>,
    booted: Option<String>,
    /// What the system profile points at (the next boot).
    profile: Option<String>,
    /// The system fleet.toml wants; `null` with `--no-eval` or when evaluation failed.
    desired: Option<String>,
    /// Why the desired system is unknown (evaluation failed).
    desired_error: Option<String>,
    /// `current == desired` and `profile == desired`; `null` when either is unknown.
    in_sync: Option<bool>,
    /// The specialisation of the profile's system that runs, if any.
    specialisation: Option<String>,
    /// The booted system's boot chain differs from the profile's (what the next boot runs).
    needs_reboot: bool,
    /// Which parts differ (`kernel`, `initrd`, `kernel-modules`, `kernel-params`, `dtbs`,
    /// `firmware`, `init-interface-version`).
    reboot_parts: Vec<&'static str>,
    generation: Option<u64>,
    /// `/etc/nixos/current-configuration`.
    package: Option<String>,
    /// What fleet recorded when it deployed the running system (`null`: the running system
    /// was not deployed by fleet, e.g. after `nixos-rebuild --rollback`).
    deployed: Option<serde_json::Value>,
    /// Secrets of fleet.toml that are not on the host as they should be (e.g. after a reboot
    /// emptied /run/keys): `fleet secrets push`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    missing_secrets: Vec<String>,
}

pub fn run(global: &GlobalArgs, args: &StatusArgs) -> Result<u8, CommandError> {
    let inventory = load::inventory(global)?;
    let hosts = load::selected(&inventory, global)?;
    let dir = fleet_dir(&global.file);
    let statuses = signals::runtime()?.block_on(async {
        let cancel = CancellationToken::new();
        signals::on_ctrl_c(cancel.clone());
        let remote = Remote::new(global, &hosts, false).await?;
        let evaluate = async {
            if args.no_eval {
                return None;
            }
            let specs: Vec<_> = hosts.iter().map(|h| build_spec(&inventory, h)).collect();
            Some(
                fleet_nix_build::evaluate(
                    &specs,
                    &build_options(
                        &inventory,
                        &dir,
                        &Events::quiet(),
                        &crate::desired::EvalSettings::of(global),
                    ),
                )
                .await,
            )
        };
        let read = gather::gather(
            &remote,
            &hosts,
            None,
            Want {
                store: false,
                keep_store: false,
            },
            global.parallel,
            &cancel,
        );
        let (desired, gathered) = tokio::join!(evaluate, read);
        if cancel.is_cancelled() {
            return Err(CliError::Interrupted);
        }
        let mut out = Vec::new();
        for (i, (name, reached)) in gathered.into_iter().enumerate() {
            let (desired, desired_error) = match desired.as_ref().map(|d| &d[i].1) {
                None => (None, None),
                Some(Ok(ev)) => (Some(ev.toplevel.clone()), None),
                Some(Err(e)) => (None, Some(error_chain(e))),
            };
            out.push(match reached {
                Err(e) => Status {
                    name,
                    reachable: false,
                    error: Some(e.to_string()),
                    current: None,
                    booted: None,
                    profile: None,
                    desired,
                    desired_error,
                    in_sync: None,
                    specialisation: None,
                    needs_reboot: false,
                    reboot_parts: Vec::new(),
                    generation: None,
                    package: None,
                    deployed: None,
                    missing_secrets: Vec::new(),
                },
                Ok(r) => {
                    let metas: Vec<_> = inventory
                        .secrets_for(&name)
                        .into_iter()
                        .map(crate::secrets::meta)
                        .collect();
                    // Status asks no sudo password: where sudo needs one, what the login user
                    // can see (a folder it cannot search is "unknown", not "missing").
                    let check = |p| fleet_executor::secrets::missing(&r.conn, p, &metas);
                    let missing_secrets = match check(&r.privilege).await {
                        Ok(m) => m,
                        Err(_) => check(&fleet_executor::Privilege::None)
                            .await
                            .unwrap_or_default(),
                    };
                    r.conn.close().await;
                    let f = r.facts;
                    let in_sync = desired.as_ref().map(|d| {
                        let runs =
                            f.current.as_deref() == Some(d.as_str()) || f.specialisation.is_some();
                        runs && f.profile.as_deref() == Some(d.as_str())
                    });
                    let reboot_parts: Vec<&'static str> =
                        f.reboot_parts().iter().map(|p| p.as_str()).collect();
                    Status {
                        name,
                        reachable: true,
                        error: None,
                        needs_reboot: !reboot_parts.is_empty(),
                        reboot_parts,
                        specialisation: f.specialisation.clone(),
                        current: f.current,
                        booted: f.booted,
                        profile: f.profile,
                        desired,
                        desired_error,
                        in_sync,
                        generation: f.generation,
                        package: f.package,
                        deployed: f.deployment,
                        missing_secrets,
                    }
                }
            });
        }
        Ok(out)
    })?;
    let text = if global.json {
        crate::envelope::document("status", Some("hosts"), &statuses)
    } else {
        table(&statuses)
    };
    output(std::io::stdout().lock().write_all(text.as_bytes()))?;
    Ok(if statuses.iter().all(|s| s.reachable) {
        exit::OK
    } else {
        exit::FAILURE
    })
}

/// The one-word state of a host.
fn state(s: &Status) -> &'static str {
    if !s.reachable {
        "unreachable"
    } else if s.current.is_none() {
        "not deployed"
    } else {
        let wants = |p: &Option<String>| p.is_some() && p == &s.desired;
        match s.in_sync {
            Some(true) => "in sync",
            // `apply test`: runs it, the next boot runs something else.
            Some(false) if wants(&s.current) => "not boot default",
            // `apply boot`: the next boot runs it.
            Some(false) if wants(&s.profile) => "drifted (boots next)",
            Some(false) => "drifted",
            None => "running",
        }
    }
}

fn table(statuses: &[Status]) -> String {
    let header = ["HOST", "STATE", "CURRENT", "GEN", "REBOOT", "LAST APPLY"];
    let rows: Vec<[String; 6]> = statuses
        .iter()
        .map(|s| {
            [
                s.name.to_string(),
                state(s).to_owned(),
                s.current.as_deref().map_or("-".to_owned(), short_path),
                s.generation.map_or("-".to_owned(), |g| g.to_string()),
                if s.needs_reboot {
                    format!("yes ({})", s.reboot_parts.join(", "))
                } else {
                    String::new()
                },
                s.deployed.as_ref().map_or(String::new(), deployed_text),
            ]
        })
        .collect();
    let mut out = crate::table::render(header, &rows);
    for s in statuses {
        if let Some(e) = &s.error {
            let _ = writeln!(out, "\n{}: {e}", s.name);
        } else if s.in_sync == Some(false) {
            let _ = writeln!(
                out,
                "\n{}: runs {}, fleet.toml wants {}",
                s.name,
                s.current
                    .as_deref()
                    .map_or("nothing".to_owned(), short_path),
                s.desired.as_deref().map_or("-".to_owned(), short_path)
            );
        }
        if s.reachable
            && s.profile.is_some()
            && s.profile != s.current
            && s.specialisation.is_none()
        {
            let _ = writeln!(
                out,
                "\n{}: runs {}, the system profile (next boot) is {}",
                s.name,
                s.current
                    .as_deref()
                    .map_or("nothing".to_owned(), short_path),
                s.profile.as_deref().map_or("-".to_owned(), short_path)
            );
        }
        if !s.missing_secrets.is_empty() {
            let _ = writeln!(
                out,
                "\n{}: secrets missing: {} (`fleet secrets push --on {}` places them)",
                s.name,
                s.missing_secrets.join(", "),
                s.name
            );
        }
        if let Some(sp) = &s.specialisation {
            let _ = writeln!(out, "\n{}: runs its specialisation `{sp}`", s.name);
        }
        if let Some(e) = &s.desired_error {
            let _ = writeln!(out, "\n{}: cannot evaluate: {e}", s.name);
        }
    }
    out
}

/// `3f2a864 (dirty) by me@laptop at 2026-11-25T10:00:00Z`.
fn deployed_text(d: &serde_json::Value) -> String {
    let s = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let mut out = String::new();
    match d.get("commit").and_then(|v| v.as_str()) {
        Some(c) => out.push_str(&c[..c.len().min(7)]),
        None => out.push_str("(no git)"),
    }
    if d.get("dirty").and_then(serde_json::Value::as_bool) == Some(true) {
        out.push_str(" (dirty)");
    }
    let _ = write!(out, " by {} at {}", s("by"), s("at"));
    out
}
