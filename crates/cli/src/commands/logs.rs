//! `fleet logs HOST`: the log of the host's last activation (default, `--activation`) or a
//! unit's journal (`--unit NAME`), the last `-n` lines.
//!
//! The activation helper writes its output to `/run/fleet/log-<id>` and, once the deployment
//! package is linked, a record `/nix/var/fleet/records/<system>.json` naming that id. The last
//! activation is the newest log: the one the newest record names, or a newer one (an
//! activation that failed or was rolled back writes no record). `/run` is a tmpfs: after a
//! reboot the logs are gone, and fleet says so. Both are read as root (the host's `sudo`).

use fleet_executor::quote;

use crate::args::{GlobalArgs, LogsArgs};
use crate::error::{CliError, CommandError};
use crate::one_host::{self, OneHost};
use crate::{exit, load, signals};

/// Exit codes of the remote scripts below (beside the reader's own).
const NO_LOG: u32 = 40;
const NO_JOURNAL: u32 = 41;

/// Finds the last activation's log; prints `id<TAB>result<TAB>record` on the first line, then
/// the log's last `$1` lines.
const ACTIVATION: &str = r#"
records=/nix/var/fleet/records state=/run/fleet
rec=$(ls -t "$records"/*.json 2>/dev/null | head -n 1)
id=
[ -n "$rec" ] && id=$(sed -n 's/.*"id": *"\([^"]*\)".*/\1/p' "$rec" | head -n 1)
log=
[ -n "$id" ] && [ -e "$state/log-$id" ] && log=$state/log-$id
newest=$(ls -t "$state"/log-* 2>/dev/null | head -n 1)
if [ -n "$newest" ] && { [ -z "$log" ] || [ "$newest" -nt "$log" ]; }; then log=$newest; fi
[ -n "$log" ] || { printf '%s\n' "$id"; exit 40; }
id=${log##*/log-}
r=$(grep -l "\"id\": *\"$id\"" "$records"/*.json 2>/dev/null | head -n 1)
printf '%s\t%s\t%s\n' "$id" "$(cat "$state/result-$id" 2>/dev/null || echo unknown)" "$(cat "$r" 2>/dev/null)"
tail -n "$1" "$log"
"#;

/// A unit's journal; exit 41 when the host has no journal to read.
const JOURNAL: &str = r#"
command -v journalctl >/dev/null 2>&1 && [ -d /run/systemd/journal ] || exit 41
exec journalctl --no-pager -o short-iso -n "$1" -u "$2"
"#;

pub fn run(global: &GlobalArgs, args: &LogsArgs) -> Result<u8, CommandError> {
    let inventory = load::inventory(global)?;
    let host = one_host::find(&inventory, &args.host)?;
    signals::runtime()?
        .block_on(async {
            let h = one_host::connect(global, host, true).await?;
            let result = match &args.unit {
                Some(unit) => journal(&h, unit, args.lines).await,
                None => activation(&h, args.lines).await,
            };
            h.conn.close().await;
            result
        })
        .map_err(Into::into)
}

async fn activation(h: &OneHost, lines: u32) -> Result<u8, CliError> {
    let cmd = format!("sh -c {} sh {lines}", quote(ACTIVATION));
    let ran = h.run(&cmd).await?;
    match ran.code {
        Some(0) => {}
        Some(NO_LOG) => {
            let id = ran.stdout.trim();
            return Err(h.error(if id.is_empty() {
                "no activation log: fleet has not activated anything here since the last boot \
                 (logs live in /run/fleet)"
                    .to_owned()
            } else {
                format!(
                    "no log of the last activation ({id}): /run/fleet is emptied at boot, \
                     so it ran before the last reboot"
                )
            }));
        }
        _ => {
            return Err(h.error(format!(
                "reading the activation log failed: {}",
                ran.stderr.trim()
            )))
        }
    }
    let (head, log) = ran.stdout.split_once('\n').unwrap_or((&ran.stdout, ""));
    let mut fields = head.splitn(3, '\t');
    let id = fields.next().unwrap_or("");
    let result = fields.next().unwrap_or("unknown");
    let record: Option<serde_json::Value> = fields
        .next()
        .filter(|r| !r.trim().is_empty())
        .and_then(|r| serde_json::from_str(r).ok());
    let mut about = format!("{}: activation {id}, result {result}", h.name);
    if let Some(r) = &record {
        let s = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_owned();
        about.push_str(&format!(", {} by {} at {}", s("goal"), s("by"), s("at")));
        if let Some(c) = r.get("commit").and_then(|v| v.as_str()) {
            about.push_str(&format!(", commit {}", &c[..c.len().min(12)]));
        }
    }
    errln!("{about}");
    crate::out::out(format_args!("{log}"));
    Ok(exit::OK)
}

async fn journal(h: &OneHost, unit: &str, lines: u32) -> Result<u8, CliError> {
    let cmd = format!("sh -c {} sh {lines} {}", quote(JOURNAL), quote(unit));
    let ran = h.run(&cmd).await?;
    match ran.code {
        Some(NO_JOURNAL) => Err(h.error(format!(
            "has no systemd journal (no journalctl or journald is not running): \
             cannot show the journal of {unit}"
        ))),
        Some(0) => {
            crate::out::out(format_args!("{}", ran.stdout));
            Ok(exit::OK)
        }
        code => {
            crate::out::out(format_args!("{}", ran.stdout));
            Err(h.error(format!(
                "journalctl failed ({}): {}",
                code.map_or("killed".to_owned(), |c| format!("exit {c}")),
                ran.stderr.trim()
            )))
        }
    }
}
