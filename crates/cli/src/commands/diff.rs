//! `fleet diff HOST GEN1 GEN2`: the package diff between two system generations of a host,
//! computed as the plan's (`fleet_planner::diff_closures` over both closures' store paths,
//! read from the host with `nix-store -qR`).

use std::collections::BTreeSet;

use fleet_executor::quote;

use crate::args::{DiffArgs, GlobalArgs};
use crate::error::{CliError, CommandError};
use crate::one_host::{self, OneHost};
use crate::{exit, load, signals};

pub fn run(global: &GlobalArgs, args: &DiffArgs) -> Result<u8, CommandError> {
    let inventory = load::inventory(global)?;
    let host = one_host::find(&inventory, &args.host)?;
    let (from, to, diff) = signals::runtime()?.block_on(async {
        let h = one_host::connect(global, host, false).await?;
        let r = async {
            let (from, before) = closure(&h, args.from).await?;
            let (to, after) = closure(&h, args.to).await?;
            let skip: BTreeSet<&str> = [from.as_str(), to.as_str()].into();
            let diff = fleet_planner::diff_closures(
                before.iter().map(String::as_str),
                after.iter().map(String::as_str),
                &skip,
            );
            Ok::<_, CliError>((from, to, diff))
        }
        .await;
        h.conn.close().await;
        r
    })?;
    if global.json {
        let v = serde_json::json!({
            "host": host.name.as_str(),
            "from": { "generation": args.from, "system": from },
            "to": { "generation": args.to, "system": to },
            "diff": diff,
        });
        outln!("{}", crate::envelope::document("diff", None, &v).trim_end());
        return Ok(exit::OK);
    }
    outln!(
        "{}: generation {} {} → generation {} {}",
        host.name,
        args.from,
        fleet_planner::short_path(&from),
        args.to,
        fleet_planner::short_path(&to)
    );
    let with_version = |name: &str, version: &str| {
        if version.is_empty() {
            name.to_owned()
        } else {
            format!("{name} {version}")
        }
    };
    for p in &diff.added {
        outln!("  + {}", with_version(&p.name, &p.version));
    }
    for p in &diff.removed {
        outln!("  - {}", with_version(&p.name, &p.version));
    }
    for c in &diff.changed {
        outln!("  ~ {} {} → {}", c.name, c.from, c.to);
    }
    if diff.rebuilt > 0 {
        outln!(
            "  {} package{} rebuilt with the same version",
            diff.rebuilt,
            if diff.rebuilt == 1 { "" } else { "s" }
        );
    }
    if diff.is_empty() {
        outln!("  (no package changes)");
    }
    Ok(exit::OK)
}

/// The system of generation `generation` and its closure.
async fn closure(h: &OneHost, generation: u64) -> Result<(String, Vec<String>), CliError> {
    let link = format!("/nix/var/nix/profiles/system-{generation}-link");
    let cmd = format!(
        "l={}; [ -L \"$l\" ] || exit 40; s=$(readlink -f \"$l\") && echo \"$s\" && nix-store -qR \"$s\"",
        quote(&link)
    );
    let ran = h.run(&cmd).await?;
    match ran.code {
        Some(0) => {}
        Some(40) => {
            return Err(h.error(format!(
                "has no system generation {generation} (`fleet generations {}` lists them)",
                h.name
            )))
        }
        _ => {
            return Err(h.error(format!(
                "reading the closure of generation {generation} failed: {}",
                ran.stderr.trim()
            )))
        }
    }
    let mut lines = ran.stdout.lines().map(str::to_owned);
    let system = lines.next().unwrap_or_default();
    Ok((system, lines.collect()))
}
