//! A flake host's lock in the plan: the flake's revision (or NAR hash) and which of its inputs
//! changed since the host's last deploy (the lock recorded on the host).

use serde::{Deserialize, Serialize};

pub use fleet_types::{FlakeLock, LockedInput};

/// The flake part of a host's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlakePlan {
    pub reference: String,
    /// The flake's revision: a git commit (12 digits), else its NAR hash (shortened).
    pub revision: String,
    pub dirty: bool,
    /// Inputs whose lock differs from the one recorded at the host's last deploy (empty when
    /// nothing was recorded: the first deploy, or a host that was not a flake host).
    pub changed: Vec<InputChange>,
}

/// An input whose locked version changed: `from` (none: new) → `to` (none: removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputChange {
    pub input: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// `2026-11-20 (1a2b3c4)`: the date of an input's last change and a short revision or hash.
pub fn input_label(input: &LockedInput) -> String {
    let id = match (&input.revision, &input.nar_hash) {
        (Some(r), _) => r.chars().take(7).collect(),
        (None, Some(h)) => short_hash(h),
        (None, None) => "?".to_owned(),
    };
    match input.last_modified.filter(|t| *t > 86_400) {
        Some(t) => format!("{} ({id})", date(t)),
        None => id,
    }
}

fn short_hash(h: &str) -> String {
    h.strip_prefix("sha256-")
        .unwrap_or(h)
        .chars()
        .take(10)
        .collect()
}

/// `YYYY-MM-DD` (UTC) of seconds since the epoch.
fn date(secs: u64) -> String {
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The plan of a flake host's lock against what its last deploy recorded.
pub fn flake_plan(desired: &FlakeLock, previous: Option<&FlakeLock>) -> FlakePlan {
    let revision = match &desired.revision {
        Some(r) => r.chars().take(12).collect(),
        None => short_hash(&desired.nar_hash),
    };
    let mut changed = Vec::new();
    if let Some(prev) = previous {
        let names: std::collections::BTreeSet<&String> =
            desired.inputs.keys().chain(prev.inputs.keys()).collect();
        for name in names {
            let (old, new) = (prev.inputs.get(name), desired.inputs.get(name));
            if old != new {
                changed.push(InputChange {
                    input: name.clone(),
                    from: old.map(input_label),
                    to: new.map(input_label),
                });
            }
        }
    }
    FlakePlan {
        reference: desired.reference.clone(),
        revision,
        dirty: desired.dirty,
        changed,
    }
}

impl FlakePlan {
    /// `flake /src/infra 1a2b3c4d5e6f (dirty); nixpkgs 2026-10-01 (…) → 2026-11-20 (…)`.
    pub fn line(&self) -> String {
        let mut s = format!("flake {} {}", self.reference, self.revision);
        if self.dirty {
            s.push_str(" (dirty)");
        }
        for c in &self.changed {
            let side = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".to_owned());
            s.push_str(&format!(
                "; {} {} → {}",
                c.input,
                side(&c.from),
                side(&c.to)
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(rev: &str, t: u64) -> FlakeLock {
        FlakeLock {
            reference: "/infra".into(),
            revision: None,
            nar_hash: "sha256-abcdefghijklmn=".into(),
            last_modified: None,
            dirty: false,
            inputs: [(
                "nixpkgs".to_owned(),
                LockedInput {
                    revision: Some(rev.into()),
                    nar_hash: None,
                    last_modified: Some(t),
                },
            )]
            .into(),
        }
    }

    #[test]
    fn changed_inputs_against_the_recorded_lock() {
        let old = lock("1111111aaaa", 1_790_000_000);
        let new = lock("2222222bbbb", 1_795_647_599);
        let p = flake_plan(&new, Some(&old));
        assert_eq!(p.revision, "abcdefghij");
        assert_eq!(
            p.changed,
            vec![InputChange {
                input: "nixpkgs".into(),
                from: Some("2026-09-21 (1111111)".into()),
                to: Some("2026-11-25 (2222222)".into()),
            }]
        );
        assert_eq!(
            p.line(),
            "flake /infra abcdefghij; nixpkgs 2026-09-21 (1111111) → 2026-11-25 (2222222)"
        );
        assert!(flake_plan(&new, Some(&new)).changed.is_empty());
        assert!(flake_plan(&new, None).changed.is_empty());
    }
}
