//! The async runtime of a command and Ctrl-C: the first one cancels the run (no new work;
//! activations already started finish and are reported), the second exits at once with 130.

use fleet_executor::CancellationToken;

use crate::error::CliError;
use crate::{exit, term};

/// A multi-threaded runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

/// Cancels `cancel` on the first Ctrl-C; exits the process on the second. At a terminal
/// prompt (the sudo password, a confirmation) the first Ctrl-C exits at once: nothing has
/// started yet. Call inside the runtime.
///
/// Cancelling never depends on printing: the token is cancelled (or the process exits) first,
/// and the message after it goes to a stderr that may be closed (`fleet apply 2>&1 | tee log`
/// with `tee` gone), which is ignored.
pub fn on_ctrl_c(cancel: CancellationToken) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        if term::interrupt_prompt() {
            errln!("\nfleet: interrupted at the prompt; nothing was done");
            std::process::exit(i32::from(exit::INTERRUPTED));
        }
        cancel.cancel();
        errln!(
            "\nfleet: interrupted: starting nothing new; activations already running finish \
             (Ctrl-C again to abort)"
        );
        if tokio::signal::ctrl_c().await.is_ok() {
            term::interrupt_prompt();
            errln!("\nfleet: aborted");
            std::process::exit(i32::from(exit::INTERRUPTED));
        }
    });
}
