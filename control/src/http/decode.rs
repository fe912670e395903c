//! JSON request bodies decoded as Consul decodes them: Go's `encoding/json` matches object keys
//! to struct fields case-insensitively, so Consul clients send `{"name": ..}` as readily as
//! `{"Name": ..}` (py-consul's `acl.policy.create` does). Our types are serde structs with
//! Consul's exact names; [`json_body`] renames each top-level key that equals a field name
//! ignoring ASCII case to that field's exact name, then decodes as usual (so unknown fields are
//! still refused where a type says `deny_unknown_fields`).
//!
//! The field names come from serde itself: `field_names` hands the type a deserializer that
//! only records the `fields` list serde passes to `deserialize_struct`, so there is no second
//! list to keep in step with the type. Types that are not plain structs (maps, `flatten`)
//! are decoded unchanged. Nested objects keep their keys as sent.

use serde::de::{self, DeserializeOwned, Visitor};

/// Decodes `body` as `T`, matching top-level keys to `T`'s fields case-insensitively.
pub fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    let mut value: serde_json::Value = serde_json::from_slice(body)?;
    if let (Some(fields), Some(object)) = (field_names::<T>(), value.as_object_mut()) {
        let renames: Vec<(String, &'static str)> = object
            .keys()
            .filter(|k| !fields.contains(&k.as_str()))
            .filter_map(|k| {
                let exact = fields.iter().find(|f| f.eq_ignore_ascii_case(k))?;
                Some((k.clone(), *exact))
            })
            .collect();
        for (sent, exact) in renames {
            // A body carrying both spellings keeps the exact one, as Go keeps the last match
            // and ours would otherwise be ambiguous.
            if let Some(v) = object.remove(&sent)
                && !object.contains_key(exact)
            {
                object.insert(exact.to_string(), v);
            }
        }
    }
    serde_json::from_value(value)
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

impl de::Error for Stop {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Stop
    }
}

impl<'de> de::Deserializer<'de> for &mut Probe {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "PascalCase", deny_unknown_fields)]
    struct Body {
        name: String,
        #[serde(rename = "ID", default)]
        id: String,
        #[serde(default)]
        rules: String,
    }

    #[test]
    fn keys_match_fields_ignoring_case() {
        let b: Body = json_body(br#"{"name":"n","id":"i","RULES":"r"}"#).unwrap();
        assert_eq!(
            b,
            Body {
                name: "n".into(),
                id: "i".into(),
                rules: "r".into()
            }
        );
    }

    #[test]
    fn exact_spelling_wins_and_unknown_fields_are_still_refused() {
        let b: Body = json_body(br#"{"Name":"exact","name":"other"}"#).unwrap();
        assert_eq!(b.name, "exact");
        let e = json_body::<Body>(br#"{"Name":"n","Nmae":"typo"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `Nmae`"), "{e}");
    }

    #[test]
    fn non_structs_decode_unchanged() {
        let m: std::collections::HashMap<String, u8> = json_body(br#"{"name":1}"#).unwrap();
        assert_eq!(m["name"], 1);
        assert!(json_body::<Body>(b"not json").is_err());
    }
}
