//! JSON text → the tree, with the line of every key.
//!
//! serde_json reports positions only for syntax errors, so the text is fed to it through a
//! reader that counts the bytes it hands out: serde_json's `io::Read` front end pulls one byte
//! at a time, so right after a key is parsed the count sits just past the key's closing quote,
//! which is on the key's line (a JSON string cannot span lines). We deserialize into the tree
//! directly, not through `serde_json::Value`, whose map keeps only the last of two equal keys.

use std::cell::Cell;
use std::fmt;
use std::io::Read;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{Entry, LineIndex, SyntaxError, Value};

/// Parses `text` as one JSON value.
pub fn parse_json(text: &str) -> Result<Value, SyntaxError> {
    let pos = Cell::new(0);
    let ctx = Ctx {
        pos: &pos,
        lines: LineIndex::new(text),
    };
    let reader = CountingReader {
        rest: text.as_bytes(),
        pos: &pos,
    };
    let mut de = serde_json::Deserializer::from_reader(reader);
    let value = Seed(&ctx)
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| SyntaxError {
            syntax: "JSON",
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
    Ok(value)
}

/// Hands out `rest` and counts what it handed out in `pos`.
struct CountingReader<'a> {
    rest: &'a [u8],
    pos: &'a Cell<usize>,
}

impl Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.rest.read(buf)?;
        self.pos.set(self.pos.get() + n);
        Ok(n)
    }
}

struct Ctx<'a> {
    pos: &'a Cell<usize>,
    lines: LineIndex,
}

#[derive(Clone, Copy)]
struct Seed<'c, 'a>(&'c Ctx<'a>);

impl<'de> DeserializeSeed<'de> for Seed<'_, '_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_, '_> {
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

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Other("a number too large"), Value::Int))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Other("a fractional number"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            items.push(v);
        }
        Ok(Value::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            // Just past the key's closing quote: on the key's line.
            let line = self.0.lines.line(self.0.pos.get().saturating_sub(1));
            let value = map.next_value_seed(self)?;
            entries.push(Entry { key, value, line });
        }
        Ok(Value::Object(entries))
    }
}
