//! Errors, one value per host.

use std::sync::Arc;

use thiserror::Error;

/// This machine cannot build a host's `system`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("this machine ({native}) cannot build {system}: {reason}\n{}", remedies_text(.remedies))]
pub struct CannotBuild {
    pub system: String,
    /// The deployer's native system.
    pub native: String,
    /// What was checked (extra-platforms, builders).
    pub reason: String,
    /// What the user can do, one remedy per entry.
    pub remedies: Vec<String>,
}

fn remedies_text(remedies: &[String]) -> String {
    let mut out = String::from("remedies (any one):");
    for r in remedies {
        out.push_str("\n  - ");
        out.push_str(r);
    }
    out
}

fn failed_list(failed: &[String]) -> String {
    if failed.is_empty() {
        String::new()
    } else {
        format!(
            " ({} derivation(s) failed: {})",
            failed.len(),
            failed.join(", ")
        )
    }
}

/// `1.5 GiB`, `512 MiB`.
pub fn human_bytes(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let mib = n as f64 / MIB;
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.0} MiB")
    }
}

/// How to give an evaluation a `<name>` it looks up.
pub fn search_path_help(name: &str) -> String {
    match name {
        "nixpkgs" | "nixos-config" => format!("fleet provides <{name}> itself (the host's pin and configuration)"),
        _ => format!(
            "fleet.toml provides no <{name}>: add `nix-path = {{ {key} = \"path/to/{name}\" }}` to the host's table or to [defaults] (a path relative to fleet.toml)",
            key = if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') { name.to_owned() } else { format!("\"{name}\"") },
        ),
    }
}

/// Why one host could not be evaluated or built.
#[derive(Debug, Clone, Error)]
pub enum BuildError {
    #[error(transparent)]
    CannotBuild(#[from] CannotBuild),

    #[error("invalid host specification: {reason}")]
    InvalidSpec { reason: String },

    /// A configuration file looks up a `<name>` that fleet.toml does not provide.
    #[error("{file}:{line} uses <{name}>, which is not on the host's search path\n{}", search_path_help(.name))]
    SearchPath {
        name: String,
        file: String,
        line: usize,
    },

    /// The configuration sets `nixpkgs.hostPlatform` to another system than fleet.toml's.
    #[error("the configuration is for {configured} (nixpkgs.hostPlatform), but fleet.toml says system = \"{system}\"; make them agree")]
    PlatformMismatch { configured: String, system: String },

    /// The configuration's files could not be read.
    #[error(transparent)]
    Files(#[from] crate::files::DiscoverError),

    /// Nix could not evaluate the host; `stderr` is Nix's error text.
    /// A flake host's attribute is not in the flake's `nixosConfigurations`.
    #[error("{flake} has no nixosConfigurations.{attribute}{}", flake_attribute_help(.available, .suggestion))]
    FlakeAttribute {
        flake: String,
        attribute: String,
        available: Vec<String>,
        suggestion: Option<String>,
    },

    #[error("evaluation failed:\n{stderr}")]
    Eval { stderr: String },

    /// Evaluating the host alone took more memory than one evaluation may use.
    #[error(
        "evaluating this host alone took more than {} of memory (at {} it was stopped); \
         allow more with `--eval-max-memory SIZE`",
        human_bytes(*.limit),
        human_bytes(*.rss)
    )]
    EvalMemory { limit: u64, rss: u64 },

    /// Some derivation of the host failed to build.
    #[error("build failed{}\n{stderr}", failed_list(.failed))]
    Build {
        /// The failed derivations in this host's closure.
        failed: Vec<String>,
        /// The parts of Nix's output about them.
        stderr: String,
    },

    /// A Nix command failed in a way that is not about one host's configuration.
    #[error("`{command}` failed ({status}):\n{stderr}")]
    Nix {
        command: String,
        status: String,
        stderr: String,
    },

    #[error("could not run `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: Arc<std::io::Error>,
    },

    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: Arc<std::io::Error>,
    },

    #[error("unexpected output from `{command}`: {detail}")]
    Output { command: String, detail: String },
}

fn flake_attribute_help(available: &[String], suggestion: &Option<String>) -> String {
    let mut s = if available.is_empty() {
        "; it has no nixosConfigurations".to_owned()
    } else {
        format!("; it has: {}", available.join(", "))
    };
    if let Some(c) = suggestion {
        s.push_str(&format!(
            "\ndid you mean `{c}`? (`flake = \"REF#{c}\"` in fleet.toml)"
        ));
    }
    s
}
