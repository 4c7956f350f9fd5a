//! What apply would do with a host's secrets (docs/secrets.md): names, paths and the kind of
//! change only. The host compares the content; the plan never holds content or a hash of it.

use serde::{Deserialize, Serialize};

/// One secret of a host's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretPlan {
    pub name: String,
    pub dest: String,
    pub change: SecretChange,
}

/// What apply does with a secret on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretChange {
    /// Not on the host yet (or not readable as what fleet placed).
    Create,
    /// On the host with another content, owner, group or mode.
    Change,
    Unchanged,
    /// Placed by fleet before, no longer in fleet.toml for this host: deleted.
    Remove,
}

impl SecretChange {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretChange::Create => "create",
            SecretChange::Change => "change",
            SecretChange::Unchanged => "unchanged",
            SecretChange::Remove => "remove",
        }
    }

    /// The mark the rendered plan shows before the secret's name.
    pub fn mark(self) -> &'static str {
        match self {
            SecretChange::Create => "+",
            SecretChange::Change => "~",
            SecretChange::Unchanged => "=",
            SecretChange::Remove => "-",
        }
    }
}
