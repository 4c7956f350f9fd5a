//! The async runtime of a command and Ctrl-C: the first one cancels the run (no new work;
//! activations already started finish and are reported), the second exits at once with 130.

use fleet_executor::CancellationToken;

use crate::error::CliError;
use crate::exit;

/// A multi-threaded runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

/// Cancels `cancel` on the first Ctrl-C; exits the process on the second. Call inside the
/// runtime.
pub fn on_ctrl_c(cancel: CancellationToken) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        eprintln!(
            "\nfleet: interrupted: starting nothing new; activations already running finish \
             (Ctrl-C again to abort)"
        );
        cancel.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nfleet: aborted");
            std::process::exit(i32::from(exit::INTERRUPTED));
        }
    });
}
