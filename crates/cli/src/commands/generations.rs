//! `fleet generations HOST`: the host's system profile generations, oldest first: number,
//! date, system, NixOS version, the commit fleet recorded when it deployed that system, and
//! which one runs (current), was booted, and is the boot default (the profile). Read as the
//! login user, in one command.

use serde::Serialize;

use crate::args::{GenerationsArgs, GlobalArgs};
use crate::error::{CliError, CommandError};
use crate::one_host::{self, OneHost};
use crate::record::rfc3339;
use crate::{exit, load, signals};

/// One generation (also the `--json` shape).
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub generation: u64,
    /// When the generation was made (RFC 3339, UTC).
    pub date: String,
    pub system: String,
    /// `SYSTEM/nixos-version`.
    pub nixos_version: Option<String>,
    /// fleet.toml's git commit when fleet deployed this system (`null`: not deployed by
    /// fleet, no git, or the record is gone).
    pub commit: Option<String>,
    pub dirty: Option<bool>,
    /// `user@machine` that deployed it, from fleet's record.
    pub deployed_by: Option<String>,
    /// `/run/current-system` is this system.
    pub current: bool,
    /// `/run/booted-system` is this system.
    pub booted: bool,
    /// The system profile points at this generation (the next boot's default).
    pub profile: bool,
}

/// `C<TAB>current<TAB>booted<TAB>profile-link`, then per generation
/// `G<TAB>number<TAB>mtime<TAB>system<TAB>version<TAB>record`.
const LIST: &str = r#"p=/nix/var/nix/profiles/system
printf 'C\t%s\t%s\t%s\n' "$(readlink -f /run/current-system 2>/dev/null)" "$(readlink -f /run/booted-system 2>/dev/null)" "$(readlink "$p" 2>/dev/null)"
for l in "$p"-*-link; do
  [ -L "$l" ] || continue
  n=${l##*/system-}; n=${n%-link}
  case "$n" in ''|*[!0-9]*) continue ;; esac
  s=$(readlink -f "$l")
  printf 'G\t%s\t%s\t%s\t%s\t%s\n' "$n" "$(stat -c %Y "$l")" "$s" \
    "$(head -n 1 "$s/nixos-version" 2>/dev/null)" \
    "$(head -n 1 "/nix/var/fleet/records/${s##*/}.json" 2>/dev/null)"
done"#;

/// Reads the generations of `h`'s system profile, oldest first.
pub async fn read(h: &OneHost) -> Result<Vec<Generation>, CliError> {
    let ran = h.run(LIST).await?;
    if ran.code != Some(0) {
        return Err(h.error(format!(
            "listing the system generations failed: {}",
            ran.stderr.trim()
        )));
    }
    Ok(parse(&ran.stdout))
}

fn parse(text: &str) -> Vec<Generation> {
    let (mut current, mut booted, mut profile) = (String::new(), String::new(), String::new());
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["C", c, b, p] => {
                (current, booted, profile) = ((*c).to_owned(), (*b).to_owned(), (*p).to_owned())
            }
            ["G", n, mtime, system, version, record] => {
                let Ok(generation) = n.parse::<u64>() else {
                    continue;
                };
                let record: Option<serde_json::Value> = serde_json::from_str(record).ok();
                let field = |k: &str| record.as_ref().and_then(|r| r.get(k));
                out.push(Generation {
                    generation,
                    date: rfc3339(mtime.parse().unwrap_or(0)),
                    system: (*system).to_owned(),
                    nixos_version: Some((*version).to_owned()).filter(|v| !v.is_empty()),
                    commit: field("commit").and_then(|v| v.as_str()).map(str::to_owned),
                    dirty: field("dirty").and_then(serde_json::Value::as_bool),
                    deployed_by: field("by").and_then(|v| v.as_str()).map(str::to_owned),
                    current: !system.is_empty() && *system == current,
                    booted: !system.is_empty() && *system == booted,
                    profile: profile == format!("system-{generation}-link"),
                });
            }
            _ => {}
        }
    }
    out.sort_by_key(|g| g.generation);
    out
}

pub fn run(global: &GlobalArgs, args: &GenerationsArgs) -> Result<u8, CommandError> {
    let inventory = load::inventory(global)?;
    let host = one_host::find(&inventory, &args.host)?;
    let gens = signals::runtime()?.block_on(async {
        let h = one_host::connect(global, host, false).await?;
        let gens = read(&h).await;
        h.conn.close().await;
        gens
    })?;
    if global.json {
        let doc = serde_json::json!({ "host": host.name.as_str(), "generations": gens });
        outln!(
            "{}",
            crate::envelope::document("generations", None, &doc).trim_end()
        );
        return Ok(exit::OK);
    }
    if gens.is_empty() {
        errln!(
            "{}: no system generations (nothing deployed yet)",
            host.name
        );
        return Ok(exit::OK);
    }
    let rows: Vec<[String; 6]> = gens
        .iter()
        .map(|g| {
            let mut flags = Vec::new();
            for (on, word) in [
                (g.current, "current"),
                (g.booted, "booted"),
                (g.profile, "default"),
            ] {
                if on {
                    flags.push(word);
                }
            }
            [
                g.generation.to_string(),
                g.date.replace('T', " ").trim_end_matches('Z').to_owned(),
                fleet_planner::short_path(&g.system),
                g.nixos_version.clone().unwrap_or_else(|| "-".into()),
                match (&g.commit, g.dirty) {
                    (Some(c), d) => format!(
                        "{}{}",
                        &c[..c.len().min(7)],
                        if d == Some(true) { " (dirty)" } else { "" }
                    ),
                    (None, _) if g.deployed_by.is_some() => "(no git)".into(),
                    (None, _) => "-".into(),
                },
                flags.join(", "),
            ]
        })
        .collect();
    crate::out::out(format_args!(
        "{}",
        crate::table::render(["GEN", "DATE", "SYSTEM", "VERSION", "COMMIT", ""], &rows)
    ));
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_listing() {
        let text = "C\t/nix/store/b-sys\t/nix/store/a-sys\tsystem-2-link\n\
                    G\t2\t86400\t/nix/store/b-sys\t24.05\t{\"commit\":\"abcdef123\",\"dirty\":true,\"by\":\"me@x\"}\n\
                    G\t1\t0\t/nix/store/a-sys\t\t\n";
        let g = parse(text);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].generation, 1);
        assert!(g[0].booted && !g[0].current && !g[0].profile);
        assert_eq!(g[0].nixos_version, None);
        assert_eq!(g[0].commit, None);
        assert_eq!(g[1].date, "1970-01-02T00:00:00Z");
        assert!(g[1].current && g[1].profile && !g[1].booted);
        assert_eq!(g[1].commit.as_deref(), Some("abcdef123"));
        assert_eq!(g[1].dirty, Some(true));
        assert_eq!(g[1].nixos_version.as_deref(), Some("24.05"));
    }
}
