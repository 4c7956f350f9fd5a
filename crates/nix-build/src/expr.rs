//! The Nix expression fleet generates for a batch of hosts (pure string building).

use camino::{Utf8Path, Utf8PathBuf};

const SWITCH_TEMPLATE: &str = include_str!("templates/switch.sh");
const README_TEMPLATE: &str = include_str!("templates/README.md");
const PACKAGE_BUILDER: &str = include_str!("templates/package-builder.sh");

/// A version label fleet gives a system whose nixpkgs has no `.git-revision` or
/// `.version-suffix` (a GitHub archive): `system.nixos.revision` / `versionSuffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VersionLabel {
    pub revision: Option<String>,
    pub suffix: String,
}

/// A host ready for the expression: everything it reads is in the store already.
#[derive(Debug, Clone)]
pub(crate) struct ExprHost {
    pub system: String,
    /// Store path of the pinned nixpkgs.
    pub nixpkgs: String,
    /// Store path of the host's configuration files (`fleet-config`).
    pub tree: String,
    /// The folder `tree` is a copy of (for error messages).
    pub origin: String,
    /// The configuration file, relative to `tree`.
    pub config_rel: Utf8PathBuf,
    pub cross: bool,
    pub label: Option<VersionLabel>,
    /// The search path of this host's evaluation: `nixpkgs` and the `nix-path` entries, as
    /// store paths (`nixos-config` is added when the host is evaluated alone).
    pub search: Vec<(String, String)>,
}

impl ExprHost {
    /// `<nixos-config>`: the configuration file in the store copy.
    pub fn nixos_config(&self) -> String {
        format!("{}/{}", self.tree, self.config_rel)
    }
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

/// The expression for a batch: a list, in order, of
/// `{ toplevel; toplevelOut; package; packageOut; hostPlatform; alone; }` (.drv and output
/// paths; `alone`: the host reads `<nixos-config>` and must be evaluated by itself).
///
/// Each host: `import "${nixpkgs}/nixos" { configuration; system; }` with the configuration
/// read from its store copy; the deployment package is a derivation of the toplevel's `system`
/// that holds that copy, links `nixpkgs` and `system`, a `switch` script and a README. It
/// depends only on the host's own files, pin and system, never on the host's name, so
/// identical hosts share one package.
pub(crate) fn batch_expression(hosts: &[ExprHost]) -> String {
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
    e.push_str("in [\n");
    for h in hosts {
        let (revision, suffix) = match &h.label {
            Some(l) => (
                l.revision.as_deref().map_or("null".to_owned(), nix_string),
                nix_string(&l.suffix),
            ),
            None => ("null".to_owned(), "null".to_owned()),
        };
        let search: Vec<String> = h
            .search
            .iter()
            .filter(|(name, _)| name != "nixpkgs")
            .map(|(name, path)| {
                format!(
                    "({} + builtins.storePath {})",
                    nix_string(&format!("{name}=")),
                    nix_string(path)
                )
            })
            .collect();
        e.push_str(&format!(
            "  (host {{ nixPath = [ {} ]; nixpkgs = builtins.storePath {}; tree = builtins.storePath {}; configFile = {}; configName = {}; system = {}; cross = {}; revision = {revision}; versionSuffix = {suffix}; }})\n",
            search.join(" "),
            nix_string(&h.nixpkgs),
            nix_string(&h.tree),
            nix_path(Utf8Path::new(&h.nixos_config())),
            nix_string(h.config_rel.as_str()),
            nix_string(&h.system),
            h.cross
        ));
    }
    e.push_str("]\n");
    e
}

const HOST_FUNCTION: &str = r#"
  host = { nixPath, nixpkgs, tree, configFile, configName, system, cross, revision, versionSuffix }:
    let
      # What fleet adds to the host's configuration: for `build = "cross"` only the build
      # platform (and the host platform as a default, so the configuration's own wins); a
      # version label when nixpkgs has none.
      configuration =
        if !cross && versionSuffix == null then configFile
        else { lib, ... }:
          let mkDefault = lib.mkDefault or (x: x); in
          { imports = [ configFile ]; }
          // (if cross then {
            nixpkgs.buildPlatform = builtins.currentSystem;
            nixpkgs.hostPlatform = mkDefault system;
          } else { })
          // (if versionSuffix == null then { } else {
            system.nixos = { versionSuffix = mkDefault versionSuffix; }
              // (if revision == null then { } else { revision = mkDefault revision; });
          });
      nixos = import "${nixpkgs}/nixos" { inherit configuration system; };
      cfg = nixos.config;
      alone = cfg.system.copySystemConfiguration or false;
      platform =
        let p = builtins.tryEval (
          let h = cfg.nixpkgs.hostPlatform or null; in
          if h == null then null else if builtins.isString h then h else h.system or null);
        in if p.success then p.value else null;
      toplevel = cfg.system.build.toplevel;
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
        config = tree;
        inherit nixPath toplevel nixpkgs configName switchTemplate readmeTemplate;
      };
    in if alone && !(builtins.tryEval <nixos-config>).success then {
      inherit alone;
      hostPlatform = platform;
      toplevel = ""; toplevelOut = ""; package = ""; packageOut = "";
    } else {
      alone = false;
      hostPlatform = platform;
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
    fn hosts_read_their_store_copy() {
        let h = |sys: &str, cross: bool| ExprHost {
            system: sys.into(),
            nixpkgs: "/nix/store/aaa-source".into(),
            tree: "/nix/store/bbb-fleet-config".into(),
            origin: "/fleet".into(),
            config_rel: "hosts/pi 1/configuration.nix".into(),
            cross,
            label: None,
            search: vec![
                ("nixpkgs".into(), "/nix/store/aaa-source".into()),
                ("nixos-hardware".into(), "/nix/store/ccc-source".into()),
            ],
        };
        let e = batch_expression(&[h("x86_64-linux", false), h("aarch64-linux", true)]);
        assert_eq!(e.matches("(host {").count(), 2);
        assert!(
            e.contains(
                r#"configFile = (/. + "/nix/store/bbb-fleet-config/hosts/pi 1/configuration.nix")"#
            ),
            "{e}"
        );
        assert!(e.contains("nixpkgs = builtins.storePath \"/nix/store/aaa-source\""));
        assert!(e.contains("cross = true; revision = null; versionSuffix = null;"));
        assert!(
            e.contains(
                r#"nixPath = [ ("nixos-hardware=" + builtins.storePath "/nix/store/ccc-source") ];"#
            ),
            "{e}"
        );
    }
}
