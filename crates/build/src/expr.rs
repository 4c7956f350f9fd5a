//! The Nix expression fleet generates for a batch of hosts (pure string building).

use camino::{Utf8Path, Utf8PathBuf};

use crate::spec::PinSpec;

const SWITCH_TEMPLATE: &str = include_str!("templates/switch.sh");
const README_TEMPLATE: &str = include_str!("templates/README.md");
const PACKAGE_BUILDER: &str = include_str!("templates/package-builder.sh");

/// A host ready for the expression: paths are absolute.
#[derive(Debug, Clone)]
pub(crate) struct ExprHost {
    pub system: String,
    pub pin: PinSpec,
    /// Absolute path of the configuration file.
    pub config: Utf8PathBuf,
    pub cross: bool,
}

/// A Nix string literal holding exactly `s`.
pub(crate) fn nix_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' if chars.peek() == Some(&'{') => out.push_str("\\$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A Nix path value for an absolute path (works with spaces and any other character).
pub(crate) fn nix_path(p: &Utf8Path) -> String {
    debug_assert!(p.is_absolute());
    format!("(/. + {})", nix_string(p.as_str()))
}

fn pin_expr(pin: &PinSpec) -> String {
    match pin {
        PinSpec::Tarball { url, sha256 } => format!(
            "builtins.fetchTarball {{ url = {}; sha256 = {}; }}",
            nix_string(url),
            nix_string(sha256)
        ),
        PinSpec::Path(p) => format!(
            "builtins.path {{ path = {}; name = \"source\"; }}",
            nix_path(p)
        ),
    }
}

/// The expression for a batch: a list, in order, of
/// `{ toplevel; toplevelOut; package; packageOut; }` (.drv and output paths).
///
/// Each host: `import "${nixpkgs}/nixos" { configuration; system; }`; the deployment package is
/// a derivation of the toplevel's `system` that holds the configuration folder (filtered), links
/// `nixpkgs` and `system`, a `switch` script and a README. It depends only on configuration, pin
/// and system, never on the host's name, so identical hosts share one package.
pub(crate) fn batch_expression(hosts: &[ExprHost]) -> String {
    let mut pins: Vec<&PinSpec> = Vec::new();
    for h in hosts {
        if !pins.contains(&&h.pin) {
            pins.push(&h.pin);
        }
    }
    let mut e = String::new();
    e.push_str("let\n");
    e.push_str(&format!(
        "  switchTemplate = builtins.toFile \"fleet-switch\" {};\n",
        nix_string(SWITCH_TEMPLATE)
    ));
    e.push_str(&format!(
        "  readmeTemplate = builtins.toFile \"fleet-README.md\" {};\n",
        nix_string(README_TEMPLATE)
    ));
    e.push_str(&format!(
        "  builderScript = builtins.toFile \"fleet-package-builder.sh\" {};\n",
        nix_string(PACKAGE_BUILDER)
    ));
    e.push_str(HOST_FUNCTION);
    for (i, pin) in pins.iter().enumerate() {
        e.push_str(&format!("  pin{i} = {};\n", pin_expr(pin)));
    }
    e.push_str("in [\n");
    for h in hosts {
        let pin = pins.iter().position(|p| **p == h.pin).unwrap_or_default();
        let dir = h.config.parent().unwrap_or(Utf8Path::new("/"));
        let name = h.config.file_name().unwrap_or_default();
        e.push_str(&format!(
            "  (host {{ nixpkgs = pin{pin}; configFile = {}; configDir = {}; configName = {}; system = {}; cross = {}; }})\n",
            nix_path(&h.config),
            nix_path(dir),
            nix_string(name),
            nix_string(&h.system),
            h.cross
        ));
    }
    e.push_str("]\n");
    e
}

const HOST_FUNCTION: &str = r#"
  keep = path: type:
    let b = baseNameOf path; in
    !(b == ".git" || b == ".fleet" || b == ".direnv"
      || (type == "symlink" && (b == "result" || builtins.substring 0 7 b == "result-")));
  host = { nixpkgs, configFile, configDir, configName, system, cross }:
    let
      configuration =
        if cross then {
          imports = [ configFile ];
          nixpkgs.buildPlatform = builtins.currentSystem;
          nixpkgs.hostPlatform = system;
        } else configFile;
      nixos = import "${nixpkgs}/nixos" { inherit configuration system; };
      toplevel = nixos.config.system.build.toplevel;
      # Real nixpkgs: coreutils and sed from the build platform's package set. The stand-in has
      # none, so it uses the deployer's /usr/bin and /bin.
      path =
        if nixos ? pkgs && nixos.pkgs ? runCommandLocal
        then "${nixos.pkgs.buildPackages.coreutils}/bin:${nixos.pkgs.buildPackages.gnused}/bin"
        else "/usr/bin:/bin";
      package = derivation {
        name = "fleet-deployment";
        system = toplevel.system;
        builder = "/bin/sh";
        args = [ builderScript ];
        PATH = path;
        inherit toplevel nixpkgs configName switchTemplate readmeTemplate;
        config = builtins.path { path = configDir; name = "fleet-config"; filter = keep; };
      };
    in {
      toplevel = toplevel.drvPath;
      toplevelOut = toplevel.outPath;
      package = package.drvPath;
      packageOut = package.outPath;
    };
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        assert_eq!(nix_string(r#"a "b" \ ${c} $d"#), r#""a \"b\" \\ \${c} $d""#);
        assert_eq!(nix_string("x\ny"), r#""x\ny""#);
    }

    #[test]
    fn paths_with_spaces() {
        assert_eq!(
            nix_path(Utf8Path::new("/tmp/my hosts/pi 1.nix")),
            r#"(/. + "/tmp/my hosts/pi 1.nix")"#
        );
    }

    #[test]
    fn pins_are_shared() {
        let h = |sys: &str| ExprHost {
            system: sys.into(),
            pin: PinSpec::Path("/np".into()),
            config: "/c/configuration.nix".into(),
            cross: false,
        };
        let e = batch_expression(&[h("x86_64-linux"), h("aarch64-linux")]);
        assert_eq!(e.matches("pin0 = builtins.path").count(), 1);
        assert!(!e.contains("pin1"));
        assert_eq!(e.matches("(host {").count(), 2);
    }
}
