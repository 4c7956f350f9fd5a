//! What a NixOS system boots, and which parts of two systems differ.

use serde::{Deserialize, Serialize};

/// A part of the boot chain whose change needs a reboot to take effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootPart {
    Kernel,
    Initrd,
    KernelModules,
    KernelParams,
    /// Device trees (Raspberry Pis and other boards).
    Dtbs,
    Firmware,
    /// The init interface version (a new one needs a reboot; switch-to-configuration exits 100).
    InitInterface,
}

/// How a toplevel holds a [`BootPart`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootEntry {
    /// A symlink; the part is where it points.
    Link,
    /// A file; the part is its contents, lines joined.
    File,
}

impl BootPart {
    /// Every part, in the order plans list them.
    pub const ALL: [BootPart; 7] = [
        BootPart::Kernel,
        BootPart::Initrd,
        BootPart::KernelModules,
        BootPart::KernelParams,
        BootPart::Dtbs,
        BootPart::Firmware,
        BootPart::InitInterface,
    ];

    /// The entry's name in a toplevel (also how plans name the part).
    pub fn as_str(self) -> &'static str {
        match self {
            BootPart::Kernel => "kernel",
            BootPart::Initrd => "initrd",
            BootPart::KernelModules => "kernel-modules",
            BootPart::KernelParams => "kernel-params",
            BootPart::Dtbs => "dtbs",
            BootPart::Firmware => "firmware",
            BootPart::InitInterface => "init-interface-version",
        }
    }

    /// Whether the toplevel's entry is a link or a file.
    pub fn entry(self) -> BootEntry {
        match self {
            BootPart::KernelParams | BootPart::InitInterface => BootEntry::File,
            _ => BootEntry::Link,
        }
    }
}

/// What a system boots: where its `kernel`, `initrd`, `kernel-modules`, `dtbs` and `firmware`
/// links point, and the contents of its `kernel-params` and `init-interface-version` files.
/// NixOS needs a reboot for a change of any of them to take effect.
///
/// `None` means the system has no such entry (a container; `dtbs` on x86) or it could not be
/// read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSpec {
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub modules: Option<String>,
    #[serde(default)]
    pub kernel_params: Option<String>,
    #[serde(default)]
    pub dtbs: Option<String>,
    #[serde(default)]
    pub firmware: Option<String>,
    #[serde(default)]
    pub init_interface: Option<String>,
}

impl BootSpec {
    /// Built from what `read` says of each part (the caller does the reading: a local
    /// toplevel, a host's facts).
    pub fn from_fn(mut read: impl FnMut(BootPart) -> Option<String>) -> Self {
        BootSpec {
            kernel: read(BootPart::Kernel),
            initrd: read(BootPart::Initrd),
            modules: read(BootPart::KernelModules),
            kernel_params: read(BootPart::KernelParams),
            dtbs: read(BootPart::Dtbs),
            firmware: read(BootPart::Firmware),
            init_interface: read(BootPart::InitInterface),
        }
    }

    /// One part.
    pub fn get(&self, part: BootPart) -> Option<&str> {
        match part {
            BootPart::Kernel => &self.kernel,
            BootPart::Initrd => &self.initrd,
            BootPart::KernelModules => &self.modules,
            BootPart::KernelParams => &self.kernel_params,
            BootPart::Dtbs => &self.dtbs,
            BootPart::Firmware => &self.firmware,
            BootPart::InitInterface => &self.init_interface,
        }
        .as_deref()
    }
}

/// Boot parts that differ between two systems (as NixOS decides a reboot: the booted system
/// against the one the next boot runs).
pub fn reboot_parts(booted: &BootSpec, next: &BootSpec) -> Vec<BootPart> {
    BootPart::ALL
        .into_iter()
        .filter(|&part| booted.get(part) != next.get(part))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kernel: &str, params: &str) -> BootSpec {
        BootSpec::from_fn(|part| match part {
            BootPart::Kernel => Some(kernel.to_owned()),
            BootPart::KernelParams => Some(params.to_owned()),
            BootPart::Dtbs => None,
            other => Some(format!("/nix/store/x-{}", other.as_str())),
        })
    }

    #[test]
    fn parts_that_differ_need_a_reboot() {
        let a = spec("/nix/store/k1", "quiet");
        assert!(reboot_parts(&a, &a.clone()).is_empty());
        assert_eq!(
            reboot_parts(&a, &spec("/nix/store/k2", "quiet")),
            [BootPart::Kernel]
        );
        assert_eq!(
            reboot_parts(&a, &spec("/nix/store/k2", "loud")),
            [BootPart::Kernel, BootPart::KernelParams]
        );
        // A part appearing (or vanishing) is a change too.
        let mut b = a.clone();
        b.dtbs = Some("/nix/store/d".into());
        assert_eq!(reboot_parts(&a, &b), [BootPart::Dtbs]);
        assert_eq!(reboot_parts(&BootSpec::default(), &BootSpec::default()), []);
    }

    #[test]
    fn every_part_is_one_field() {
        let s = BootSpec::from_fn(|p| Some(p.as_str().to_owned()));
        for part in BootPart::ALL {
            assert_eq!(s.get(part), Some(part.as_str()));
        }
        assert_eq!(BootPart::KernelParams.entry(), BootEntry::File);
        assert_eq!(BootPart::InitInterface.entry(), BootEntry::File);
        assert_eq!(BootPart::KernelModules.entry(), BootEntry::Link);
    }

    #[test]
    fn serde_is_the_saved_format() {
        // Round 1's three-part form still reads; names are the planner's.
        let old: BootSpec =
            serde_json::from_str(r#"{"kernel":"k","initrd":null,"modules":"m"}"#).unwrap();
        assert_eq!(old.kernel.as_deref(), Some("k"));
        assert_eq!(old.dtbs, None);
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"kernel":"k","initrd":null,"modules":"m","kernel_params":null,"dtbs":null,"firmware":null,"init_interface":null}"#
        );
        assert_eq!(
            serde_json::to_string(&BootPart::ALL).unwrap(),
            r#"["kernel","initrd","kernel-modules","kernel-params","dtbs","firmware","init-interface"]"#
        );
    }
}
