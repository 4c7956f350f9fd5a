//! `fleet build [--to URL]`: evaluate and build the selected hosts here (no host is contacted),
//! print each host's system, and with `--to` push the systems' closures to a binary cache
//! (`nix copy --to URL`), where hosts with `substitute = true` find them (docs/scale.md).
//! Exit 1 when a host could not be built or the push failed.

use fleet_executor::CancellationToken;

use crate::args::{BuildArgs, GlobalArgs};
use crate::desired::{self, fleet_dir};
use crate::error::{CliError, CommandError};
use crate::events::Events;
use crate::{exit, load, signals};

pub fn run(global: &GlobalArgs, args: &BuildArgs) -> Result<u8, CommandError> {
    let inventory = load::inventory(global)?;
    let hosts = load::selected(&inventory, global)?;
    let dir = fleet_dir(&global.file);
    signals::runtime()?
        .block_on(async {
            let cancel = CancellationToken::new();
            signals::on_ctrl_c(cancel.clone());
            let eval = desired::EvalSettings::of(global);
            let events = if global.json {
                Events::quiet()
            } else {
                Events::new(crate::report::Mode::Plain, Vec::new())
            };
            let built = tokio::select! {
                d = desired::build(&inventory, &hosts, &dir, &events, &eval) => d,
                () = cancel.cancelled() => return Err(CliError::Interrupted),
            };
            let mut code = exit::OK;
            let mut systems = Vec::new();
            for (name, r) in &built.hosts {
                match r {
                    Ok(d) => {
                        outln!("{name}\t{}", d.toplevel);
                        systems.push(d.toplevel.clone());
                    }
                    Err(e) => {
                        errln!("fleet: {name}: {e}");
                        code = exit::FAILURE;
                    }
                }
            }
            if let Some(url) = &args.to {
                if !global.json {
                    errln!("fleet: pushing {} system(s) to {url}", systems.len());
                }
                let opts = desired::build_options(&inventory, &dir, &Events::quiet(), &eval);
                if let Err(e) = fleet_nix_build::push_to_cache(url, &systems, &opts.nix_env).await {
                    errln!(
                        "fleet: pushing to {url} failed: {}",
                        fleet_executor::error_chain(&e)
                    );
                    code = exit::FAILURE;
                }
            }
            Ok::<_, CliError>(code)
        })
        .map_err(CommandError::from)
}
