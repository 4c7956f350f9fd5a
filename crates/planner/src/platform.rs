//! A host that runs another system than the one fleet built for it is refused before anything
//! is copied: an aarch64 Pi cannot run an x86_64 system (nor the reverse), whatever fleet.toml
//! says.

use crate::input::{DesiredHost, RemoteState};

/// Why `desired` cannot go to a host with these facts, if it cannot.
pub(crate) fn mismatch(desired: &DesiredHost, facts: &RemoteState) -> Option<String> {
    let running = facts.system.as_deref()?;
    (running != desired.system).then(|| {
        format!(
            "{} runs {running}, the configuration is for {} (check `system` in fleet.toml)",
            desired.name, desired.system
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::BootSpec;

    fn desired(system: &str) -> DesiredHost {
        DesiredHost {
            name: "pi1".into(),
            system: system.into(),
            toplevel: "/nix/store/t".into(),
            package: "/nix/store/p".into(),
            closure: Vec::new(),
            boot: BootSpec::default(),
            specialisations: Vec::new(),
            nixpkgs: None,
            flake: None,
        }
    }

    fn running(system: Option<&str>) -> RemoteState {
        RemoteState {
            system: system.map(str::to_owned),
            ..RemoteState::default()
        }
    }

    #[test]
    fn another_architecture_is_refused() {
        assert_eq!(
            mismatch(&desired("x86_64-linux"), &running(Some("aarch64-linux"))).as_deref(),
            Some("pi1 runs aarch64-linux, the configuration is for x86_64-linux (check `system` in fleet.toml)")
        );
        assert_eq!(
            mismatch(&desired("aarch64-linux"), &running(Some("aarch64-linux"))),
            None
        );
        assert_eq!(mismatch(&desired("aarch64-linux"), &running(None)), None);
    }

    #[test]
    fn the_plan_makes_it_an_error_for_that_host_only() {
        use crate::input::HostInput;
        let inputs = [
            HostInput {
                name: "pi1".into(),
                desired: Ok(desired("x86_64-linux")),
                facts: Ok(running(Some("aarch64-linux"))),
            },
            HostInput {
                name: "pi2".into(),
                desired: Ok(DesiredHost {
                    name: "pi2".into(),
                    ..desired("aarch64-linux")
                }),
                facts: Ok(running(Some("aarch64-linux"))),
            },
        ];
        let plan = crate::plan(&inputs, &crate::PlanOptions::default());
        assert_eq!(plan.hosts[0].action, crate::Action::Error);
        assert!(plan.hosts[0].copy.paths.is_empty());
        assert!(plan.hosts[0]
            .error
            .as_deref()
            .unwrap()
            .starts_with("pi1 runs aarch64-linux"));
        assert_eq!(plan.hosts[1].action, crate::Action::Install);
    }
}
