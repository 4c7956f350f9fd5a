//! The helper script run as root on the host (`remote/activate.sh`): how it is installed and
//! run ([`Mode`], one per subcommand), and its named exit codes.

use crate::ssh::error::ExecError;
use crate::sudo::Privilege;
use crate::{quote, Connection, Stdin};

/// The activation helper run on the target (see the module docs).
pub const ACTIVATE_SCRIPT: &str = include_str!("../remote/activate.sh");

/// The helper's exit codes (`remote/activate.sh` documents the same).
pub mod exit {
    /// Applied: switch-to-configuration succeeded.
    pub const APPLIED: u32 = 0;
    /// `confirm` came too late: the watchdog had already rolled back. Also `abort` of a
    /// deployment that is no longer pending ([`NOT_PENDING`]).
    pub const TOO_LATE: u32 = 3;
    /// `abort`: the pending deployment was undone now.
    pub const ABORTED: u32 = 0;
    /// `abort`: the deployment is no longer pending (confirmed, or already undone).
    pub const NOT_PENDING: u32 = TOO_LATE;
    /// Bad input to the helper (not a NixOS system, unknown goal).
    pub const BAD_INPUT: u32 = 10;
    /// switch-to-configuration failed and the host is back where it was.
    pub const ROLLED_BACK: u32 = 100;
    /// switch-to-configuration failed and so did the undo.
    pub const ROLLBACK_FAILED: u32 = 101;
    /// switch-to-configuration failed; not undone, as asked (`--no-rollback`).
    pub const FAILED: u32 = 102;
    /// Another switch-to-configuration or fleet apply holds its lock; nothing was changed.
    pub const LOCKED: u32 = 103;
    /// switch-to-configuration exited 4: the new system is active, some units failed.
    pub const UNITS_FAILED: u32 = 104;
    /// switch-to-configuration exited 100: a new init interface; the boot entry is installed
    /// (switch, boot) and the system takes effect at the next boot.
    pub const REBOOT_REQUIRED: u32 = 105;
}

/// The helper's modes: its first argument (`remote/activate.sh` documents each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Activate (`apply`), detached from the SSH session, and wait for its result.
    Detach,
    /// Link the deployment package only.
    Link,
    /// Print a deployment's result word ([`DeployState`]).
    Result,
    /// Disarm a deployment's watchdog.
    Confirm,
    /// Undo a pending deployment now (its health checks failed).
    Abort,
    /// Switch to the previous (or a given) generation.
    Rollback,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Detach => "detach",
            Mode::Link => "link",
            Mode::Result => "result",
            Mode::Confirm => "confirm",
            Mode::Abort => "abort",
            Mode::Rollback => "rollback",
        }
    }
}

/// The command that installs the helper from stdin and runs `mode args...`.
fn script_command(mode: Mode, args: &[&str]) -> String {
    let mode = mode.as_str();
    let mut cmd = String::from(
        "umask 077 && mkdir -p /run/fleet && cat > /run/fleet/activate.sh.$$ && \
         mv -f /run/fleet/activate.sh.$$ /run/fleet/activate.sh && exec sh /run/fleet/activate.sh ",
    );
    cmd.push_str(&quote(mode));
    for a in args {
        cmd.push(' ');
        cmd.push_str(&quote(a));
    }
    cmd
}

pub(crate) async fn run_script(
    conn: &Connection,
    privilege: &Privilege,
    mode: Mode,
    args: &[&str],
) -> Result<crate::Output, ExecError> {
    tracing::debug!(
        host = conn.name(),
        ?mode,
        ?args,
        "running the activation helper"
    );
    conn.exec(
        &script_command(mode, args),
        privilege,
        Stdin::Bytes(bytes::Bytes::from_static(ACTIVATE_SCRIPT.as_bytes())),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_command_quotes_every_argument() {
        let c = script_command(Mode::Detach, &["switch", "/nix/store/x y", "it's"]);
        assert!(
            c.ends_with("detach switch '/nix/store/x y' 'it'\\''s'"),
            "{c}"
        );
    }

    #[test]
    fn the_script_is_valid_sh() {
        let path = std::env::temp_dir().join(format!("fleet-activate-{}", std::process::id()));
        std::fs::write(&path, ACTIVATE_SCRIPT).unwrap();
        let st = std::process::Command::new("sh")
            .arg("-n")
            .arg(&path)
            .status()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(st.success());
    }

    #[test]
    fn the_exit_codes_match_the_script() {
        for (word, code) in [
            ("units-failed) exit", exit::UNITS_FAILED),
            ("reboot-required) exit", exit::REBOOT_REQUIRED),
            ("locked) exit", exit::LOCKED),
            ("rolled-back) exit", exit::ROLLED_BACK),
            ("rollback-failed) exit", exit::ROLLBACK_FAILED),
            ("failed) exit", exit::FAILED),
            ("applied) exit", exit::APPLIED),
        ] {
            assert!(
                ACTIVATE_SCRIPT.contains(&format!("{word} {code} ;;")),
                "{word} {code}"
            );
        }
    }
}
