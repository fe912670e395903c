//! JSON bodies decoded as Consul decodes them. Go's `encoding/json` matches object keys to
//! struct fields ignoring case, and Consul's decoders for registrations and config entries also
//! take snake_case aliases (`sidecar_service`, `destination_service_name`): clients send
//! `{"kind": "service-defaults"}` as readily as `{"Kind": ..}`. Our types are serde structs with
//! Consul's exact names, mostly `deny_unknown_fields`.
//!
//! How: first the top-level keys are matched against the type's own field list (serde hands it
//! to `deserialize_struct`; a probe deserializer records it), so a type that does not deny
//! unknown fields cannot drop a key in another spelling. Then decode; when serde reports an unknown field (or a missing one) at some path, and the
//! object at that path has a key that is the expected field's name up to case and underscores,
//! rename that key and decode again. Only keys serde itself flagged are touched, so keys of
//! user maps (`Meta`, `Config`, HTTP header names) are never rewritten, and the field lists come
//! from serde (no second list to keep in step). A key matching no field stays an error, with
//! serde's list of expected fields and the path. Bounded: each retry renames one key, at most
//! [`MAX_RENAMES`].

use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_path_to_error::{Path, Segment};

/// Most keys one body may have renamed (each costs one more decoding pass).
pub const MAX_RENAMES: usize = 64;

/// A body that does not decode: where and why, in serde's words.
#[derive(Debug, thiserror::Error)]
#[error("{}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct DecodeError {
    /// Where in the body (`Sources[0].Permissions`), empty at the top.
    pub path: String,
    /// serde's message (e.g. "unknown field `Nmae`, expected one of `Name`, `Kind`").
    pub message: String,
}

/// Decodes `body` as `T`, matching keys to fields as Consul does (see the module docs).
pub fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| DecodeError {
        path: String::new(),
        message: e.to_string(),
    })?;
    value_as(value)
}

/// [`json`] of an already parsed value.
pub fn value_as<T: DeserializeOwned>(mut value: Value) -> Result<T, DecodeError> {
    rename_top_level::<T>(&mut value);
    let mut renames = 0;
    loop {
        let error = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(t) => return Ok(t),
            Err(e) => e,
        };
        let path = error.path().clone();
        let message = error.into_inner().to_string();
        if renames < MAX_RENAMES && rename_flagged_key(&mut value, &path, &message) {
            renames += 1;
            continue;
        }
        return Err(DecodeError {
            path: path.to_string().trim_start_matches('.').to_string(),
            message,
        });
    }
}

/// Renames each top-level key that is one of `T`'s fields in another spelling to that field
/// (the exact spelling wins when both are sent). Done up front because a type that does not
/// deny unknown fields would drop a key in another spelling silently instead of reporting it.
fn rename_top_level<T: DeserializeOwned>(value: &mut Value) {
    let (Some(fields), Some(object)) = (field_names::<T>(), value.as_object_mut()) else {
        return;
    };
    let renames: Vec<(String, &str)> = object
        .keys()
        .filter(|k| !fields.contains(&k.as_str()))
        .filter_map(|k| {
            let exact = fields.iter().find(|f| folded(f) == folded(k))?;
            Some((k.clone(), *exact))
        })
        .collect();
    for (sent, exact) in renames {
        rename(object, &sent, exact);
    }
}

/// The serialized field names of struct `T`, or `None` for any other shape.
fn field_names<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    let mut probe = Probe(None);
    let _ = T::deserialize(&mut probe);
    probe.0
}

/// A deserializer that records the field list of `deserialize_struct` and then fails.
struct Probe(Option<&'static [&'static str]>);

#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("probe")
    }
}

impl std::error::Error for Stop {}

impl serde::de::Error for Stop {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Stop
    }
}

impl<'de> serde::de::Deserializer<'de> for &mut Probe {
    type Error = Stop;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        self.0 = Some(fields);
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// A key compared as Consul's decoders compare it: case and `_` / `-` ignored.
fn folded(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The names between backquotes in `text`.
fn quoted(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// Renames the key serde's `message` is about, in the object at `path`, to the field it
/// spells; `false` when there is nothing to rename (a real error).
fn rename_flagged_key(value: &mut Value, path: &Path, message: &str) -> bool {
    let segments: Vec<&Segment> = path.iter().collect();
    if let Some(rest) = message.strip_prefix("unknown field ") {
        // "unknown field `x`, expected one of `A`, `B`": the path ends at the key itself.
        let names = quoted(rest);
        let Some((sent, expected)) = names.split_first() else {
            return false;
        };
        let Some(field) = expected.iter().find(|f| folded(f) == folded(sent)) else {
            return false;
        };
        let parent = match segments.split_last() {
            Some((Segment::Map { key }, parent)) if key == sent => parent,
            _ => &segments[..],
        };
        return object_at(value, parent).is_some_and(|o| rename(o, sent, field));
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        // "missing field `Name`": the path ends at the struct missing it.
        let Some(field) = quoted(rest).first().copied() else {
            return false;
        };
        let Some(object) = object_at(value, &segments) else {
            return false;
        };
        let Some(sent) = object
            .keys()
            .find(|k| k.as_str() != field && folded(k) == folded(field))
            .cloned()
        else {
            return false;
        };
        return rename(object, &sent, field);
    }
    false
}

/// Moves `object[sent]` to `object[field]`; when both are present the exact spelling wins and
/// the other is dropped (Go keeps one of them too).
fn rename(object: &mut serde_json::Map<String, Value>, sent: &str, field: &str) -> bool {
    let Some(v) = object.remove(sent) else {
        return false;
    };
    object.entry(field.to_string()).or_insert(v);
    true
}

/// The object at `segments` inside `value`.
fn object_at<'a>(
    value: &'a mut Value,
    segments: &[&Segment],
) -> Option<&'a mut serde_json::Map<String, Value>> {
    let mut at = value;
    for s in segments {
        at = match s {
            Segment::Seq { index } => at.get_mut(*index)?,
            Segment::Map { key } => at.get_mut(key.as_str())?,
            // An enum's variant or an untracked step does not move inside the JSON value.
            Segment::Enum { .. } | Segment::Unknown => at,
        };
    }
    at.as_object_mut()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "PascalCase", deny_unknown_fields)]
    struct Outer {
        name: String,
        #[serde(rename = "ID", default)]
        id: String,
        #[serde(default)]
        meta: BTreeMap<String, String>,
        #[serde(default)]
        sidecar_service: Option<Inner>,
        #[serde(default)]
        upstreams: Vec<Inner>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "PascalCase", deny_unknown_fields)]
    struct Inner {
        destination_name: String,
        #[serde(default)]
        local_bind_port: u16,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "PascalCase")]
    struct Lenient {
        name: String,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(tag = "Kind", rename_all = "kebab-case")]
    enum Tagged {
        #[serde(rename_all = "PascalCase")]
        ServiceDefaults { name: String, protocol: String },
    }

    #[test]
    fn keys_match_fields_ignoring_case_and_underscores_at_every_level() {
        let o: Outer = json(
            br#"{"name":"web","id":"w1","meta":{"lower_key":"v"},
                 "sidecar_service":{"destination_name":"db","LOCAL_BIND_PORT":9191},
                 "Upstreams":[{"destinationname":"a"},{"DestinationName":"b","local-bind-port":1}]}"#,
        )
        .unwrap();
        assert_eq!(o.name, "web");
        assert_eq!(o.id, "w1");
        assert_eq!(
            o.meta.keys().collect::<Vec<_>>(),
            ["lower_key"],
            "user map keys are kept as sent"
        );
        let s = o.sidecar_service.unwrap();
        assert_eq!(
            (s.destination_name.as_str(), s.local_bind_port),
            ("db", 9191)
        );
        assert_eq!(o.upstreams[0].destination_name, "a");
        assert_eq!(o.upstreams[1].local_bind_port, 1);
    }

    #[test]
    fn a_struct_without_deny_unknown_fields_gets_its_required_field_by_another_spelling() {
        let l: Lenient = json(br#"{"NAME":"x","other":1}"#).unwrap();
        assert_eq!(l.name, "x");
    }

    #[test]
    fn an_internally_tagged_enum_decodes_with_lower_case_fields() {
        let t: Tagged =
            json(br#"{"Kind":"service-defaults","name":"web","protocol":"http"}"#).unwrap();
        assert_eq!(
            t,
            Tagged::ServiceDefaults {
                name: "web".into(),
                protocol: "http".into()
            }
        );
    }

    #[test]
    fn unknown_fields_are_still_refused_with_the_path_and_the_expected_names() {
        let e = json::<Outer>(br#"{"Name":"web","Upstreams":[{"DestinationName":"a","Nmae":1}]}"#)
            .unwrap_err();
        assert_eq!(e.path, "Upstreams[0].Nmae");
        assert!(
            e.message.contains("unknown field `Nmae`") && e.message.contains("`DestinationName`"),
            "{e}"
        );
        let e = json::<Outer>(b"not json").unwrap_err();
        assert!(e.path.is_empty() && !e.message.is_empty(), "{e}");
        let e = json::<Outer>(br#"{"Name": 5}"#).unwrap_err();
        assert_eq!(e.to_string().split(':').next(), Some("Name"), "{e}");
    }

    #[test]
    fn the_exact_spelling_wins_over_another_one() {
        let o: Outer = json(br#"{"Name":"exact","name":"other"}"#).unwrap();
        assert_eq!(o.name, "exact");
        let o: Outer = json(br#"{"name":"other","Name":"exact"}"#).unwrap();
        assert_eq!(o.name, "exact");
    }

    #[test]
    fn a_lenient_struct_gets_its_optional_fields_by_another_spelling_too() {
        #[derive(Debug, Deserialize, PartialEq)]
        #[serde(rename_all = "PascalCase")]
        struct Policy {
            name: String,
            #[serde(default)]
            rules: String,
        }
        let p: Policy = json(br#"{"name":"p","rules":"r","extra":1}"#).unwrap();
        assert_eq!((p.name.as_str(), p.rules.as_str()), ("p", "r"));
    }

    #[test]
    fn renames_are_bounded() {
        let keys: Vec<String> = (0..MAX_RENAMES + 5)
            .map(|i| format!(r#""upstreams_{i}":1"#))
            .collect();
        let body = format!(r#"{{"Name":"x",{}}}"#, keys.join(","));
        assert!(json::<Outer>(body.as_bytes()).is_err());
    }
}
