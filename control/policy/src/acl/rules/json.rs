//! JSON rule text → the decoder's tree.
//!
//! Consul's JSON form of rules is HCL's JSON mapping: `{"service": {"db": {"policy": "read"}}}`
//! for `service "db" { policy = "read" }`, `{"operator": "read"}` for `operator = "read"`.
//! We deserialize into the tree directly (not through `serde_json::Value`, whose map keeps only
//! the last of two equal keys), so a segment given twice is seen and refused like in HCL.
//! serde_json reports lines only for syntax errors, so decoder errors carry no line here.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::error::{Line, RulesError};
use super::tree::{Entry, Value};

/// Parses `text` as JSON into the decoder's tree.
pub(super) fn to_tree(text: &str) -> Result<Value, RulesError> {
    serde_json::from_str::<JsonValue>(text)
        .map(|v| v.0)
        .map_err(|e| RulesError::Json {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
}

struct JsonValue(Value);

impl<'de> Deserialize<'de> for JsonValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TreeVisitor).map(JsonValue)
    }
}

struct TreeVisitor;

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Other("a number"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Other("null"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // Read (and so syntax-check) the elements; a list is never a valid rule value.
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(Value::Other("a list"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, JsonValue>()? {
            entries.push(Entry {
                key,
                value: value.0,
                line: Line(None),
            });
        }
        Ok(Value::Object(entries))
    }
}
