//! The one JSON envelope of every `--json` output (docs/cli.md, "JSON output"): an object
//! with `format` (this version) and `type` (what the object is), keys in snake_case, values of
//! enumerations in kebab-case, times as RFC 3339 UTC. A command prints either one document
//! (`hosts`, `plan`, `status`, …) or JSON lines (a run's events, then its summary).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::events::RunEvent;

/// The version of the envelope and of the objects in it. Grows when a field changes meaning
/// or goes away; new fields and types do not change it.
pub const FORMAT: u32 = 1;

/// The envelope's own keys, in this order, then the body's.
#[derive(Serialize)]
struct Envelope<'a, B: Serialize> {
    format: u32,
    #[serde(rename = "type")]
    ty: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
    #[serde(flatten)]
    body: B,
}

/// `body` under `key`, or `body`'s own fields when `key` is `None` (then `body` must serialise
/// as an object).
fn body<'a, T: Serialize>(key: Option<&'a str>, body: &'a T) -> Value {
    let v = serde_json::to_value(body).unwrap_or(Value::Null);
    match (key, v) {
        (None, v @ Value::Object(_)) => v,
        (key, v) => {
            let mut m = Map::new();
            m.insert(key.unwrap_or("value").to_owned(), v);
            Value::Object(m)
        }
    }
}

fn envelope<'a>(ty: &'a str, time: Option<SystemTime>, body: Value) -> Envelope<'a, Value> {
    Envelope {
        format: FORMAT,
        ty,
        time: time.map(rfc3339_ms),
        at_ms: None,
        host: None,
        body,
    }
}

/// A whole document (pretty, with a final newline): the envelope with `value` under `key`
/// (`{"format":1,"type":"hosts","hosts":[…]}`), or with `value`'s fields when `key` is `None`.
pub fn document(ty: &str, key: Option<&str>, value: &impl Serialize) -> String {
    let e = envelope(ty, None, body(key, value));
    let mut s = serde_json::to_string_pretty(&e).unwrap_or_default();
    s.push('\n');
    s
}

/// One JSON line (no newline) of a stream, stamped with `time`.
pub fn line(ty: &str, key: Option<&str>, value: &impl Serialize, time: SystemTime) -> String {
    serde_json::to_string(&envelope(ty, Some(time), body(key, value))).unwrap_or_default()
}

/// An event as one JSON line: `format`, `type`, `time` (`started` + `at`), `at_ms` (since the
/// start of the run), `host` for a host's event, then the event's own fields.
pub fn event_line(ev: &RunEvent, started: SystemTime) -> String {
    let fields = match ev {
        RunEvent::Run { kind, .. } => serde_json::to_value(kind),
        // With the typed reasons of an outcome in words (`reason`).
        RunEvent::Host(e) => Ok(crate::reasons::event_json(e)),
    };
    let Ok(Value::Object(mut fields)) = fields else {
        return String::new();
    };
    fields.remove("at_ms");
    let text = |v: Option<Value>| match v {
        Some(Value::String(t)) => Some(t),
        _ => None,
    };
    let ty = text(fields.remove("type")).unwrap_or_default();
    let host = text(fields.remove("host"));
    let e = Envelope {
        format: FORMAT,
        ty: &ty,
        time: Some(rfc3339_ms(started + ev.at())),
        at_ms: Some(ev.at().as_millis() as u64),
        host: host.as_deref(),
        body: Value::Object(fields),
    };
    serde_json::to_string(&e).unwrap_or_default()
}

/// `v` with the keys of its objects in snake_case (`host-key` → `host_key`), for outputs made
/// from types that mirror fleet.toml's kebab-case. The names in `nix-path` are the user's and
/// stay as written.
pub fn snake_keys(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let v = if k == "nix-path" { v } else { snake_keys(v) };
                    (k.replace('-', "_"), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(snake_keys).collect()),
        other => other,
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn rfc3339_ms(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = crate::record::rfc3339(d.as_secs());
    format!("{}.{:03}Z", secs.trim_end_matches('Z'), d.subsec_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_and_times() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(rfc3339_ms(t), "2026-11-18T11:06:40.123Z");
        assert_eq!(
            document("hosts", Some("hosts"), &vec!["a"]),
            "{\n  \"format\": 1,\n  \"type\": \"hosts\",\n  \"hosts\": [\n    \"a\"\n  ]\n}\n"
        );
        assert_eq!(
            line("summary", Some("hosts"), &Vec::<u8>::new(), t),
            r#"{"format":1,"type":"summary","time":"2026-11-18T11:06:40.123Z","hosts":[]}"#
        );
    }

    #[test]
    fn keys_become_snake_case_but_user_names_stay() {
        let v = serde_json::json!([{"host-key": "k", "nix-path": {"nixos-config": "/c"},
            "checks": {"http-get": ["a-b"]}}]);
        assert_eq!(
            snake_keys(v),
            serde_json::json!([{"host_key": "k", "nix_path": {"nixos-config": "/c"},
                "checks": {"http_get": ["a-b"]}}])
        );
    }
}
