//! What fleet's `apply --json` events say: phase times, outcomes, bytes copied.

use super::*;

/// fleet's phases and the hosts' outcomes, from `apply --json` events.
pub(super) fn fleet_events(
    text: &str,
    wall: Duration,
) -> (Option<FleetDetail>, BTreeMap<String, String>) {
    let mut outcomes = BTreeMap::new();
    let (mut first_copying, mut last_copied, mut last_outcome) = (None::<u64>, 0u64, 0u64);
    let mut d = FleetDetail::default();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let at = v["at_ms"].as_u64().unwrap_or(0);
        match v["type"].as_str() {
            Some("phase") if v["phase"] == "copying" => {
                first_copying = Some(first_copying.map_or(at, |f| f.min(at)));
            }
            Some("log") => {
                if let Some(l) = v["line"].as_str() {
                    if let Some((paths, _nar, sent)) = parse_copied(l) {
                        last_copied = last_copied.max(at);
                        d.paths += paths;
                        d.sent_compressed += sent.unwrap_or(0);
                    }
                }
            }
            Some("outcome") => last_outcome = last_outcome.max(at),
            Some("summary") => {
                for h in v["hosts"].as_array().into_iter().flatten() {
                    if let (Some(n), Some(o)) = (h["name"].as_str(), h["outcome"].as_str()) {
                        outcomes.insert(n.to_owned(), o.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    let Some(first) = first_copying else {
        return (None, outcomes);
    };
    // Event times count from the start of the run (`at_ms`); only their differences are used:
    // the time before the first copy is the rest of the wall time.
    let ms = Duration::from_millis;
    let tail = ms(last_outcome.saturating_sub(first));
    d.copy = ms(last_copied.saturating_sub(first));
    d.activate = ms(last_outcome.saturating_sub(last_copied));
    d.prepare = wall.saturating_sub(tail);
    (Some(d), outcomes)
}

/// NAR bytes fleet reports as copied (all hosts).
pub(super) fn nar_of_fleet(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "log")
        .filter_map(|v| v["line"].as_str().and_then(parse_copied))
        .map(|(_, nar, _)| nar)
        .sum()
}

/// "copied N paths (X bytes of NAR[, Y bytes sent compressed])".
pub(super) fn parse_copied(line: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = line.strip_prefix("copied ")?;
    let (paths, rest) = rest.split_once(" paths (")?;
    let (nar, rest) = rest.split_once(" bytes of NAR")?;
    let sent = rest
        .strip_prefix(", ")
        .and_then(|r| r.split_once(" bytes sent compressed"))
        .and_then(|(s, _)| s.parse().ok());
    Some((paths.parse().ok()?, nar.parse().ok()?, sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copied_lines_parse() {
        assert_eq!(
            parse_copied("copied 3 paths (1000 bytes of NAR, 400 bytes sent compressed)"),
            Some((3, 1000, Some(400)))
        );
        assert_eq!(
            parse_copied("copied 3 paths (1000 bytes of NAR)"),
            Some((3, 1000, None))
        );
        assert_eq!(parse_copied("copying"), None);
    }

    #[test]
    fn phases_come_from_events() {
        let ev = r#"{"host":"h1","at_ms":10,"type":"phase","phase":"copying"}
{"host":"h1","at_ms":510,"type":"log","stream":"fleet","line":"copied 2 paths (100 bytes of NAR, 40 bytes sent compressed)"}
{"host":"h1","at_ms":810,"type":"outcome","outcome":{"kind":"applied"}}
{"type":"summary","hosts":[{"name":"h1","outcome":"applied"}]}"#;
        let (d, o) = fleet_events(ev, Duration::from_millis(1000));
        let d = d.unwrap();
        assert_eq!(d.copy, Duration::from_millis(500));
        assert_eq!(d.activate, Duration::from_millis(300));
        assert_eq!(d.prepare, Duration::from_millis(200));
        assert_eq!(d.sent_compressed, 40);
        assert_eq!(o["h1"], "applied");
        assert_eq!(nar_of_fleet(ev), 100);
    }
}
