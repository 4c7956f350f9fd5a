//! The Nix version matrix: hosts on other Debian userlands ([`fleet_testbed::Userland`]) and
//! fleet run with another Nix as its local Nix ([`Fleet::use_deployer_nix`]).

use std::path::PathBuf;

use fleet_testbed::userland::{ensure_root, nix_wrappers};
use fleet_testbed::{Error, Root, Userland};

use crate::Fleet;

/// The root of `userland` (built on first use, cached), or `None` after printing why `case` is
/// skipped when the Debian registry cannot be reached. Any other failure panics.
#[track_caller]
pub fn root_or_skip(userland: Userland, case: &str) -> Option<Root> {
    match ensure_root(userland) {
        Ok(root) => root,
        Err(e @ Error::RegistryUnreachable { .. }) => {
            eprintln!("SKIPPED {case}: {e}");
            None
        }
        Err(e) => panic!("the {userland} root for {case}: {e}"),
    }
}

impl Fleet {
    /// From now on fleet runs with `root`'s Nix as its local Nix: wrappers of the root's `nix*`
    /// programs come first on its `PATH` (on this machine's `/nix`, see
    /// [`fleet_testbed::userland::nix_wrappers`]). Every call of one is logged to
    /// [`Fleet::deployer_nix_log`].
    pub fn use_deployer_nix(&mut self, root: &Root) {
        let bin = self._tmp.path().join("deployer-nix");
        nix_wrappers(root, &bin, &[fleet_testbed::repo_root()])
            .unwrap_or_else(|e| panic!("writing the {} Nix wrappers: {e}", root.userland));
        let path = std::env::var("PATH").unwrap_or_default();
        self.env
            .push(("PATH".into(), format!("{}:{path}", bin.display())));
        self.env.push((
            "FLEET_TESTBED_NIX_LOG".into(),
            self.deployer_nix_log().display().to_string(),
        ));
    }

    /// The command lines of the deployer Nix wrappers fleet ran, one a line.
    pub fn deployer_nix_log(&self) -> PathBuf {
        self._tmp.path().join("deployer-nix.log")
    }
}
