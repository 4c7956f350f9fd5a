//! The plan for humans: a summary line per host, then the package diffs, then the counts.

use std::fmt::Write as _;

use crate::plan::{Action, HostPlan, Plan};
use fleet_types::short_path;

/// How to render a plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// Use ANSI colours.
    pub color: bool,
}

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

struct Painter {
    color: bool,
}

impl Painter {
    fn paint(&self, style: &str, text: &str) -> String {
        if self.color && !text.is_empty() {
            format!("{style}{text}{RESET}")
        } else {
            text.to_owned()
        }
    }
}

/// Bytes for humans, in binary units: `512 B`, `12.0 KiB`, `34.5 MiB`, `1.2 GiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn action_style(action: Action) -> &'static str {
    match action {
        Action::Install => GREEN,
        Action::Update => YELLOW,
        Action::Unchanged => DIM,
        Action::Error => RED,
    }
}

/// What the host runs after apply, as far as the plan knows: the target (its specialisation's
/// toplevel is not in the plan, so a specialisation host counts as not running it).
fn running(host: &HostPlan) -> Option<String> {
    match host.specialisation {
        None => host.target.clone(),
        Some(_) => None,
    }
}

fn summary(host: &HostPlan, p: &Painter) -> String {
    let short = |path: &Option<String>| path.as_deref().map(short_path).unwrap_or_default();
    let mut parts: Vec<String> = Vec::new();
    match host.action {
        Action::Error => {
            let message = host.error.as_deref().unwrap_or("error");
            parts.push(p.paint(RED, message.lines().next().unwrap_or_default()));
        }
        Action::Unchanged => parts.push(short(&host.current)),
        Action::Install => parts.push(short(&host.target)),
        Action::Update if !host.activate => {
            parts.push(format!(
                "{} (configuration files changed, system unchanged)",
                short(&host.target)
            ));
        }
        // It runs the new system already (after `apply test`): the goal sets the profile and the
        // boot entry.
        Action::Update if host.current.is_some() && host.current == running(host) => {
            parts.push(format!(
                "{} (runs it; {} sets the profile and boot entry)",
                short(&host.target),
                host.goal
            ));
        }
        Action::Update => {
            parts.push(format!(
                "{} → {}",
                short(&host.current),
                short(&host.target)
            ));
        }
    }
    if matches!(host.action, Action::Install | Action::Update) {
        if let Some(sub) = &host.copy.substitute {
            // The host fetches these itself; fleet sends the rest.
            let rest = host.copy.paths.len() - sub.paths.len().min(host.copy.paths.len());
            parts.push(format!(
                "substitute {} ({}), copy {}, {}{}",
                plural(sub.paths.len(), "path", "paths"),
                human_size(sub.bytes),
                plural(rest, "path", "paths"),
                human_size(host.copy.bytes.saturating_sub(sub.bytes)),
                expected_text(&host.copy.expected)
            ));
        } else if host.copy.paths.is_empty() {
            parts.push("copy nothing".to_owned());
        } else {
            parts.push(format!(
                "copy {}, {}{}",
                plural(host.copy.paths.len(), "path", "paths"),
                human_size(host.copy.bytes),
                expected_text(&host.copy.expected)
            ));
            if let Some(relay) = &host.relay {
                parts.push(format!("via {relay}"));
            }
            if let Some(pin) = host.pin_bytes {
                // Once per pin: the next deploys from it find it on the host.
                parts.push(format!("(nixpkgs source {}, once)", human_size(pin)));
            }
        }
    }
    if let Some(s) = &host.specialisation {
        parts.push(format!("specialisation {s}"));
    }
    if host.profile.is_some() && host.profile != host.current && host.action != Action::Error {
        parts.push(format!("profile {}", short(&host.profile)));
    }
    if host.reboot {
        let which: Vec<&str> = host.reboot_parts.iter().map(|b| b.as_str()).collect();
        parts.push(p.paint(BOLD, &format!("reboot ({})", which.join(", "))));
    }
    parts.join("  ")
}

/// ` (≈ 53.4 MiB compressed, ≈ 1.2 MiB with deltas)`; nothing over the serve route. The JSON
/// has every figure (`copy.expected`).
fn expected_text(e: &crate::Expected) -> String {
    let mut parts = Vec::new();
    if let Some(c) = e.compressed {
        parts.push(format!("≈ {} compressed", human_size(c)));
    }
    // Deltas are worth a mention when they save a tenth or more.
    if let (Some(d), Some(c)) = (e.delta, e.compressed) {
        if d.saturating_mul(10) <= c.saturating_mul(9) {
            parts.push(format!("≈ {} with deltas", human_size(d)));
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

fn details(host: &HostPlan, p: &Painter) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(f) = &host.flake {
        lines.push(format!("  {}", f.line()));
    }
    match host.action {
        Action::Error => {
            let message = host.error.as_deref().unwrap_or_default();
            if message.lines().count() > 1 {
                lines.extend(message.lines().map(|l| format!("  {l}")));
            }
        }
        Action::Update if host.activate && !host.diff.compared => {
            lines.push("  (no package diff: the current system's closure is unknown)".to_owned());
        }
        _ => {
            let d = &host.diff;
            let with_version = |name: &str, version: &str| {
                if version.is_empty() {
                    name.to_owned()
                } else {
                    format!("{name} {version}")
                }
            };
            for pkg in &d.added {
                lines.push(format!(
                    "  {} {}",
                    p.paint(GREEN, "+"),
                    with_version(&pkg.name, &pkg.version)
                ));
            }
            for pkg in &d.removed {
                lines.push(format!(
                    "  {} {}",
                    p.paint(RED, "-"),
                    with_version(&pkg.name, &pkg.version)
                ));
            }
            for c in &d.changed {
                lines.push(format!(
                    "  {} {} {} → {}",
                    p.paint(YELLOW, "~"),
                    c.name,
                    c.from,
                    c.to
                ));
            }
            if d.rebuilt > 0 {
                let text = format!(
                    "{} rebuilt with the same version",
                    plural(d.rebuilt, "package", "packages")
                );
                lines.push(format!("  {}", p.paint(DIM, &text)));
            }
        }
    }
    for s in &host.secrets {
        let color = match s.change {
            crate::SecretChange::Create => GREEN,
            crate::SecretChange::Remove => RED,
            crate::SecretChange::Change => YELLOW,
            crate::SecretChange::Unchanged => DIM,
        };
        lines.push(format!(
            "  {} secret {} ({}, {})",
            p.paint(color, s.change.mark()),
            s.name,
            s.dest,
            s.change.as_str()
        ));
    }
    lines
}

/// Render a plan for a terminal or a log: one summary line per host (name, action, systems, what
/// is copied, whether a reboot is needed), then per host its package diff, then the counts.
pub fn render(plan: &Plan, opts: RenderOptions) -> String {
    let p = Painter { color: opts.color };
    let name_width = plan
        .hosts
        .iter()
        .map(|h| h.name.chars().count())
        .max()
        .unwrap_or(0);
    let action_width = "unchanged".len();
    let mut out = String::new();
    for host in &plan.hosts {
        let pad_name = name_width - host.name.chars().count();
        let action = host.action.as_str();
        let pad_action = action_width - action.len();
        let line = format!(
            "{}{}  {}{}  {}",
            p.paint(BOLD, &host.name),
            " ".repeat(pad_name),
            p.paint(action_style(host.action), action),
            " ".repeat(pad_action),
            summary(host, &p)
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    for host in &plan.hosts {
        let lines = details(host, &p);
        if lines.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{}:", p.paint(BOLD, &host.name));
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
    }
    if !plan.hosts.is_empty() {
        out.push('\n');
    }
    let _ = writeln!(out, "{}", plan.counts());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(36_175_872), "34.5 MiB");
        assert_eq!(human_size(1_288_490_189), "1.2 GiB");
    }
}

#[cfg(test)]
mod expected_tests {
    use super::*;
    use crate::Expected;

    #[test]
    fn the_bytes_line_shows_compressed_and_worthwhile_deltas() {
        let e = |compressed, delta| Expected {
            full: 100 << 20,
            compressed,
            delta,
            delta_paths: usize::from(delta.is_some()),
        };
        assert_eq!(expected_text(&e(None, None)), "");
        assert_eq!(
            expected_text(&e(Some(36 << 20), None)),
            " (≈ 36.0 MiB compressed)"
        );
        assert_eq!(
            expected_text(&e(Some(36 << 20), Some(2 << 20))),
            " (≈ 36.0 MiB compressed, ≈ 2.0 MiB with deltas)"
        );
        // A delta that saves under a tenth is not worth a mention (the JSON has it).
        assert_eq!(
            expected_text(&e(Some(36 << 20), Some(35 << 20))),
            " (≈ 36.0 MiB compressed)"
        );
    }
}
