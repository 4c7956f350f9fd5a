//! `fleet completions SHELL`: a completion script generated from the clap definitions, plus,
//! for bash and fish, completion of what only fleet.toml knows: host names and `@tags` for
//! `--on` (also after a comma or `!`), host names for `logs`/`generations`/`diff`/`add`'s
//! neighbours, and goals for `apply`. Those call the hidden `fleet __complete-selectors`,
//! which reads `./fleet.toml` (or `$FLEET_FILE`): offline, no host is contacted.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::args::{Cli, CompleteSelectorsArgs, CompletionsArgs, GlobalArgs};
use crate::error::{output, CommandError};
use crate::load;

/// Wraps clap's `_fleet` (bash): values from fleet.toml first, clap's completion otherwise.
const BASH_DYNAMIC: &str = r#"
# fleet: host names, tags and goals (from ./fleet.toml or $FLEET_FILE, through
# `fleet __complete-selectors`), then clap's completion for everything else.
_fleet_dynamic() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
    if [[ "$prev" == "--on" ]]; then
        local pre="" last="$cur"
        case "$cur" in *,*) pre="${cur%,*},"; last="${cur##*,}" ;; esac
        case "$last" in '!'*) pre="$pre!"; last="${last#!}" ;; esac
        COMPREPLY=( $(compgen -P "$pre" -W "$(fleet __complete-selectors 2>/dev/null)" -- "$last") )
        return 0
    fi
    if [[ $COMP_CWORD -eq 2 && "$cur" != -* ]]; then
        case "${COMP_WORDS[1]}" in
            apply)
                COMPREPLY=( $(compgen -W "switch boot test dry-activate" -- "$cur") $(compgen -f -X '!*.json' -- "$cur") )
                return 0 ;;
            logs|generations|diff)
                COMPREPLY=( $(compgen -W "$(fleet __complete-selectors --names 2>/dev/null)" -- "$cur") )
                return 0 ;;
        esac
    fi
    _fleet "$@"
}
complete -F _fleet_dynamic -o nosort -o bashdefault -o default fleet
"#;

/// Added to clap's fish script (fish merges completions for the same command).
const FISH_DYNAMIC: &str = r#"
# fleet: host names and tags from ./fleet.toml (or $FLEET_FILE), goals for apply.
complete -c fleet -l on -x -a '(fleet __complete-selectors 2>/dev/null)'
complete -c fleet -n '__fish_seen_subcommand_from logs generations diff' -x -a '(fleet __complete-selectors --names 2>/dev/null)'
complete -c fleet -n '__fish_seen_subcommand_from apply' -a 'switch boot test dry-activate'
"#;

pub fn run(args: &CompletionsArgs) -> Result<(), CommandError> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "fleet", &mut out);
    match args.shell {
        Shell::Bash => out.extend_from_slice(BASH_DYNAMIC.as_bytes()),
        Shell::Fish => out.extend_from_slice(FISH_DYNAMIC.as_bytes()),
        _ => {}
    }
    Ok(output(std::io::Write::write_all(
        &mut std::io::stdout().lock(),
        &out,
    ))?)
}

/// `fleet __complete-selectors [--names]`: every host name, then every tag as `@tag`, one a
/// line. Prints nothing (and succeeds) when fleet.toml cannot be read: completion stays quiet.
pub fn selectors(global: &GlobalArgs, args: &CompleteSelectorsArgs) -> Result<(), CommandError> {
    let Ok(inventory) = load::inventory(global) else {
        return Ok(());
    };
    for h in &inventory.hosts {
        outln!("{}", h.name);
    }
    if !args.names {
        for t in inventory.tags() {
            outln!("@{t}");
        }
    }
    Ok(())
}
