//! The document a log event becomes, with the field names of the CloudWatch Logs
//! Subscription Consumer: `@id`, `@timestamp`, `@message`, `@owner`,
//! `@log_group`, `@log_stream`, plus extracted fields and what transforms add.
//!
//! A document borrows: text that needed no unescaping in the record's inflated
//! payload (the ids, names and most messages, and what a transform cuts out of
//! them) is a view into it, so making a document copies little and allocates
//! for its field list and what transforms compute.

use std::borrow::Cow;
use std::hash::BuildHasher;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

use super::decode::cloudwatch::{LogData, LogEvent};
use crate::time::{WRITABLE_MILLIS, parse_rfc3339_millis, rfc3339_millis, write_rfc3339_millis};

/// A field name: most are known in advance and borrowed, so building a
/// document allocates for its values only.
pub type Key = Cow<'static, str>;

/// A field's value: JSON, with text that may borrow the payload the document
/// was made from, and variants of their own for what every document holds
/// (scalars, a time) so that a field stays small: a [`Value`] is many words
/// wide, and a document's fields are moved and written as a block.
#[derive(Clone, Debug)]
pub enum Field<'a> {
    /// A JSON string.
    Text(Cow<'a, str>),
    /// A JSON number.
    Number(Number),
    /// A JSON boolean.
    Bool(bool),
    /// JSON `null`.
    Null,
    /// An array built as a [`Value`] ([`Field::from`] gives the other
    /// variants to strings, scalars and objects).
    Json(Box<Value>),
    /// An object, its text borrowing as a document's does where a transform
    /// builds it from the payload.
    Object(Box<Document<'a>>),
    /// An object or array of a parsed message, kept as its JSON text: nothing
    /// looks inside one, so it is written as it came instead of being built
    /// into a [`Value`] and written again.
    Raw(Cow<'a, RawValue>),
    /// A time in Unix milliseconds, written as RFC 3339 UTC with milliseconds
    /// (`2026-11-25T19:44:28.711Z`): every document has one, and a flow log
    /// record two more, so it goes straight into the wire form instead of
    /// through a string of its own.
    Time(i64),
}

impl<'a> Field<'a> {
    /// The text, when the field is text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Field::Text(text) => Some(text),
            _ => None,
        }
    }

    /// The field as a JSON value (copying text, parsing JSON text).
    pub fn to_value(&self) -> Value {
        match self {
            Field::Text(text) => Value::String(text.to_string()),
            Field::Number(n) => Value::Number(n.clone()),
            Field::Bool(b) => Value::Bool(*b),
            Field::Null => Value::Null,
            Field::Json(value) => (**value).clone(),
            Field::Object(doc) => Value::from((**doc).clone()),
            Field::Raw(raw) => raw_value(raw),
            Field::Time(millis) => Value::String(rfc3339_millis(*millis)),
        }
    }

    /// The time in Unix milliseconds, when the field is one (in the years
    /// 0000–9999, which a search cluster takes) or is RFC 3339 text.
    pub fn as_millis(&self) -> Option<i64> {
        match self {
            Field::Time(millis) => Some(*millis).filter(|ms| WRITABLE_MILLIS.contains(ms)),
            Field::Text(text) => parse_rfc3339_millis(text),
            _ => None,
        }
    }

    /// The field, owning its text.
    pub fn into_owned(self) -> Field<'static> {
        match self {
            Field::Text(text) => Field::Text(Cow::Owned(text.into_owned())),
            Field::Number(n) => Field::Number(n),
            Field::Bool(b) => Field::Bool(b),
            Field::Null => Field::Null,
            Field::Json(value) => Field::Json(value),
            Field::Object(doc) => Field::Object(Box::new(doc.into_owned())),
            Field::Raw(raw) => Field::Raw(Cow::Owned(raw.into_owned())),
            Field::Time(millis) => Field::Time(millis),
        }
    }

    /// The field as an unsigned integer (as [`Value::as_u64`]).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Field::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    /// Whether the field is text.
    pub fn is_string(&self) -> bool {
        matches!(self, Field::Text(_))
    }

    /// A member of an object field (none when absent or not an object).
    pub fn get(&self, key: &str) -> Option<&Field<'a>> {
        match self {
            Field::Object(doc) => doc.get(key),
            _ => None,
        }
    }
}

/// JSON text as a [`Value`]. What serde_json's parser let through as raw
/// text but will not build (a number out of range, a lone surrogate) stays
/// text rather than being lost.
fn raw_value(raw: &RawValue) -> Value {
    serde_json::from_str(raw.get()).unwrap_or_else(|_| Value::String(raw.get().to_owned()))
}

static NULL_FIELD: Field<'static> = Field::Null;

impl<'a> std::ops::Index<&str> for Field<'a> {
    type Output = Field<'a>;

    /// A member of an object field, `null` when absent (as [`Value`] indexes).
    fn index(&self, key: &str) -> &Field<'a> {
        self.get(key).unwrap_or(&NULL_FIELD)
    }
}

impl PartialEq for Field<'_> {
    fn eq(&self, other: &Field<'_>) -> bool {
        match (self, other) {
            (Field::Text(a), Field::Text(b)) => a == b,
            (Field::Number(a), Field::Number(b)) => a == b,
            (Field::Bool(a), Field::Bool(b)) => a == b,
            (Field::Null, Field::Null) => true,
            (Field::Json(a), Field::Json(b)) => a == b,
            (Field::Object(a), Field::Object(b)) => a == b,
            (Field::Time(a), Field::Time(b)) => a == b,
            (Field::Raw(_) | Field::Time(_) | Field::Object(_), _)
            | (_, Field::Raw(_) | Field::Time(_) | Field::Object(_)) => {
                self.to_value() == other.to_value()
            }
            _ => false,
        }
    }
}

/// Compares as JSON: text equals a JSON string of the same text.
macro_rules! field_eq {
    ($($t:ty),*) => {$(
        impl PartialEq<$t> for Field<'_> {
            fn eq(&self, other: &$t) -> bool {
                match self {
                    Field::Text(text) => Value::String(text.to_string()) == *other,
                    _ => self.to_value() == *other,
                }
            }
        }
    )*};
}
field_eq!(Value, &str, str, String, f64, i64, i32, u64, bool);

impl From<Value> for Field<'_> {
    fn from(value: Value) -> Self {
        match value {
            Value::String(text) => Field::Text(Cow::Owned(text)),
            Value::Number(n) => Field::Number(n),
            Value::Bool(b) => Field::Bool(b),
            Value::Null => Field::Null,
            Value::Object(map) => Field::Object(Box::new(Document::from(map))),
            array => Field::Json(Box::new(array)),
        }
    }
}

impl From<String> for Field<'_> {
    fn from(text: String) -> Self {
        Field::Text(Cow::Owned(text))
    }
}

impl<'a> From<&'a str> for Field<'a> {
    fn from(text: &'a str) -> Self {
        Field::Text(Cow::Borrowed(text))
    }
}

impl<'a> From<Cow<'a, str>> for Field<'a> {
    fn from(text: Cow<'a, str>) -> Self {
        Field::Text(text)
    }
}

impl From<Field<'_>> for Value {
    fn from(field: Field<'_>) -> Value {
        match field {
            Field::Text(text) => Value::String(text.into_owned()),
            Field::Json(value) => *value,
            Field::Object(doc) => Value::from(*doc),
            Field::Raw(raw) => raw_value(&raw),
            Field::Number(_) | Field::Bool(_) | Field::Null => field.to_value(),
            Field::Time(millis) => Value::String(rfc3339_millis(millis)),
        }
    }
}

impl Serialize for Field<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Text(text) => serializer.serialize_str(text),
            Field::Number(n) => n.serialize(serializer),
            Field::Bool(b) => serializer.serialize_bool(*b),
            Field::Null => serializer.serialize_unit(),
            Field::Json(value) => value.serialize(serializer),
            Field::Object(doc) => doc.serialize(serializer),
            Field::Raw(raw) => raw_value(raw).serialize(serializer),
            Field::Time(millis) => serializer.serialize_str(&rfc3339_millis(*millis)),
        }
    }
}

/// A document: a JSON object whose fields keep the order they were added in.
///
/// A vector rather than a map: most documents have a few dozen fields at most,
/// which a scan finds faster than a hash. Past `INDEXED_FROM` fields a hash
/// index of positions is kept beside it, so that a message of 100,000 keys costs
/// their number, not its square (anyone who can write to a log group chooses
/// the keys).
#[derive(Clone, Debug, Default)]
pub struct Document<'a> {
    fields: Vec<(Key, Field<'a>)>,
    index: Option<Index>,
}

/// Fields from which lookups go through the hash index.
const INDEXED_FROM: usize = 32;

/// Positions of the fields by name: a table of indexes into `fields`, hashed
/// with a per-process random key so that chosen names cannot collide on purpose.
#[derive(Clone, Default)]
struct Index {
    hasher: std::hash::RandomState,
    positions: hashbrown::HashTable<usize>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Index({} fields)", self.positions.len())
    }
}

impl Index {
    fn of<V>(fields: &[(Key, V)]) -> Index {
        let mut index = Index::default();
        for (i, (key, _)) in fields.iter().enumerate() {
            index.add(fields, key, i);
        }
        index
    }

    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    fn find<V>(&self, fields: &[(Key, V)], key: &str) -> Option<usize> {
        self.positions
            .find(self.hash(key), |&i| fields[i].0 == key)
            .copied()
    }

    fn add<V>(&mut self, fields: &[(Key, V)], key: &str, at: usize) {
        let hasher = &self.hasher;
        self.positions
            .insert_unique(hasher.hash_one(key), at, |&i| {
                hasher.hash_one(fields[i].0.as_ref())
            });
    }
}

impl PartialEq for Document<'_> {
    fn eq(&self, other: &Document<'_>) -> bool {
        self.fields == other.fields
    }
}

impl<'a> Document<'a> {
    /// An empty document.
    pub fn new() -> Document<'a> {
        Document::default()
    }

    /// An empty document with room for `n` fields.
    pub fn with_capacity(n: usize) -> Document<'a> {
        Document {
            fields: Vec::with_capacity(n),
            index: None,
        }
    }

    fn position(&self, key: &str) -> Option<usize> {
        match &self.index {
            Some(index) => index.find(&self.fields, key),
            None => self.fields.iter().position(|(k, _)| k == key),
        }
    }

    /// Appends a field known to be absent (a field of the same name would be
    /// written twice).
    #[inline]
    pub(crate) fn push(&mut self, key: Key, value: Field<'a>) {
        // Most documents never grow an index: their fields go straight in,
        // built in place where the caller makes them.
        if self.index.is_none() && self.fields.len() + 1 < INDEXED_FROM {
            self.fields.push((key, value));
        } else {
            self.push_indexed(key, value);
        }
    }

    fn push_indexed(&mut self, key: Key, value: Field<'a>) {
        let at = self.fields.len();
        if let Some(index) = &mut self.index {
            index.add(&self.fields, &key, at);
        }
        self.fields.push((key, value));
        if self.index.is_none() && self.fields.len() >= INDEXED_FROM {
            self.index = Some(Index::of(&self.fields));
        }
    }

    /// The value of a field.
    pub fn get(&self, key: &str) -> Option<&Field<'a>> {
        self.position(key).map(|i| &self.fields[i].1)
    }

    /// The text of a field, when it is text.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// The time a field holds (see [`Field::as_millis`]).
    pub fn millis(&self, key: &str) -> Option<i64> {
        self.get(key)?.as_millis()
    }

    /// The value of a field, to change in place.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Field<'a>> {
        self.position(key).map(|i| &mut self.fields[i].1)
    }

    /// Whether a field is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Sets a field, replacing (in place) and returning any previous value.
    pub fn insert(
        &mut self,
        key: impl Into<Key>,
        value: impl Into<Field<'a>>,
    ) -> Option<Field<'a>> {
        let key = key.into();
        let value = value.into();
        match self.position(&key) {
            Some(i) => Some(std::mem::replace(&mut self.fields[i].1, value)),
            None => {
                self.push(key, value);
                None
            }
        }
    }

    /// Sets a field unless it is already present.
    pub fn insert_absent(&mut self, key: impl Into<Key>, value: impl Into<Field<'a>>) {
        let key = key.into();
        if !self.contains_key(&key) {
            self.push(key, value.into());
        }
    }

    /// Removes a field (rare: the positions after it are indexed again).
    pub fn remove(&mut self, key: &str) -> Option<Field<'a>> {
        let i = self.position(key)?;
        let (_, value) = self.fields.remove(i);
        if self.index.is_some() {
            self.index = Some(Index::of(&self.fields));
        }
        Some(value)
    }

    /// The fields, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Field<'a>)> {
        self.fields.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Appends the document as one JSON object to `out`: the wire form of
    /// every sink, written straight from the fields (text is copied as it is
    /// unless it holds a byte JSON escapes).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, (key, value)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match key {
                // Our own names (constants): nothing in them to escape.
                Key::Borrowed(name) => {
                    debug_assert!(!needs_escape(name.as_bytes()), "{name}");
                    out.push(b'"');
                    out.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(b"\":");
                }
                Key::Owned(name) => {
                    write_str(name, out);
                    out.push(b':');
                }
            }
            match value {
                Field::Text(text) => write_str(text, out),
                // Writing to a Vec cannot fail, nor can a value whose keys are
                // strings.
                Field::Number(n) => {
                    let _ = serde_json::to_writer(&mut *out, n);
                }
                Field::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
                Field::Null => out.extend_from_slice(b"null"),
                Field::Json(value) => {
                    let _ = serde_json::to_writer(&mut *out, value);
                }
                Field::Object(doc) => doc.write_json(out),
                Field::Raw(raw) => write_raw(raw.get(), out),
                Field::Time(millis) => {
                    out.push(b'"');
                    write_rfc3339_millis(*millis, out);
                    out.push(b'"');
                }
            }
        }
        out.push(b'}');
    }

    /// The document, owning all its text (to keep past the payload).
    pub fn into_owned(self) -> Document<'static> {
        Document {
            fields: self
                .fields
                .into_iter()
                .map(|(k, v)| (k, v.into_owned()))
                .collect(),
            index: self.index,
        }
    }
}

impl<'a> std::ops::Index<&str> for Document<'a> {
    type Output = Field<'a>;

    /// The value of a field, `null` when absent (as `serde_json::Value` indexes).
    fn index(&self, key: &str) -> &Field<'a> {
        self.get(key).unwrap_or(&NULL_FIELD)
    }
}

impl<'a> IntoIterator for Document<'a> {
    type Item = (Key, Field<'a>);
    type IntoIter = std::vec::IntoIter<(Key, Field<'a>)>;

    fn into_iter(self) -> Self::IntoIter {
        self.fields.into_iter()
    }
}

impl<'a, K: Into<Key>, V: Into<Field<'a>>> Extend<(K, V)> for Document<'a> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, fields: I) {
        for (k, v) in fields {
            self.insert(k, v);
        }
    }
}

impl<'a, K: Into<Key>, V: Into<Field<'a>>> FromIterator<(K, V)> for Document<'a> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(fields: I) -> Document<'a> {
        let mut doc = Document::new();
        doc.extend(fields);
        doc
    }
}

impl From<Map<String, Value>> for Document<'_> {
    fn from(map: Map<String, Value>) -> Self {
        map.into_iter().collect()
    }
}

impl From<Document<'_>> for Value {
    fn from(doc: Document<'_>) -> Value {
        Value::Object(
            doc.fields
                .into_iter()
                .map(|(k, v)| (k.into_owned(), Value::from(v)))
                .collect(),
        )
    }
}

impl Serialize for Document<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.fields.len()))?;
        for (k, v) in &self.fields {
            map.serialize_entry(k.as_ref(), v)?;
        }
        map.end()
    }
}

impl<'a> Document<'a> {
    /// The fields of `text`, a JSON object, or `None` when it is not one. Text
    /// borrows from `text` where it holds no escape; objects and arrays stay
    /// JSON text ([`Field::Raw`]); a repeated key keeps its last value.
    pub fn parse_object(text: &'a str) -> Option<Document<'a>> {
        serde_json::from_str::<Flat<'a>>(text).ok().map(|f| f.0)
    }
}

/// A JSON object read one level deep: see [`Document::parse_object`].
struct Flat<'a>(Document<'a>);

impl<'de> Deserialize<'de> for Flat<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Flat<'de>, D::Error> {
        use serde::de::Error;

        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = Flat<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Flat<'de>, A::Error> {
                let mut doc = Document::with_capacity(access.size_hint().unwrap_or(8));
                while let Some((k, raw)) = access.next_entry::<String, &'de RawValue>()? {
                    let text = raw.get();
                    let value = match text.as_bytes().first() {
                        Some(b'{' | b'[') if plain(text) => Field::Raw(Cow::Borrowed(raw)),
                        // A string without escapes is its own text, quotes off.
                        Some(b'"') if !text.contains('\\') => {
                            Field::Text(Cow::Borrowed(&text[1..text.len() - 1]))
                        }
                        Some(b'"') => Field::Text(Cow::Owned(
                            serde_json::from_str(text).map_err(A::Error::custom)?,
                        )),
                        _ => Field::from(
                            serde_json::from_str::<Value>(text).map_err(A::Error::custom)?,
                        ),
                    };
                    doc.insert(k, value);
                }
                Ok(Flat(doc))
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

impl<'de> Deserialize<'de> for Document<'de> {
    /// A JSON object; a repeated key keeps its last value, as `serde_json` does.
    /// Its text values borrow from the input where they hold no escape.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Document<'de>, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = Document<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<Document<'de>, A::Error> {
                let mut doc = Document::with_capacity(access.size_hint().unwrap_or(8));
                while let Some((k, v)) = access.next_entry::<String, Field<'de>>()? {
                    doc.insert(k, v);
                }
                Ok(doc)
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    /// Text borrows from the input where it holds no escape; anything else is
    /// a [`Value`].
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Field<'de>, D::Error> {
        use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
        use serde::de::{Error, SeqAccess};

        struct Any;
        impl<'de> Visitor<'de> for Any {
            type Value = Field<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E: Error>(self, v: &'de str) -> Result<Field<'de>, E> {
                Ok(Field::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Field<'de>, E> {
                Ok(Field::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: Error>(self, v: String) -> Result<Field<'de>, E> {
                Ok(Field::Text(Cow::Owned(v)))
            }
            fn visit_bool<E: Error>(self, v: bool) -> Result<Field<'de>, E> {
                Ok(Field::Bool(v))
            }
            fn visit_i64<E: Error>(self, v: i64) -> Result<Field<'de>, E> {
                Ok(Field::from(Value::from(v)))
            }
            fn visit_u64<E: Error>(self, v: u64) -> Result<Field<'de>, E> {
                Ok(Field::from(Value::from(v)))
            }
            fn visit_f64<E: Error>(self, v: f64) -> Result<Field<'de>, E> {
                Ok(Field::from(Value::from(v)))
            }
            fn visit_unit<E: Error>(self) -> Result<Field<'de>, E> {
                Ok(Field::Null)
            }
            fn visit_none<E: Error>(self) -> Result<Field<'de>, E> {
                Ok(Field::Null)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<'de>, A::Error> {
                Value::deserialize(MapAccessDeserializer::new(map)).map(Field::from)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field<'de>, A::Error> {
                Value::deserialize(SeqAccessDeserializer::new(seq)).map(Field::from)
            }
        }
        deserializer.deserialize_any(Any)
    }
}

/// Whether JSON text reads as serde_json builds a [`Value`] from it, and no
/// object in it has a key twice. serde_json's raw reader lets through what
/// its `Value` builder refuses (a lone surrogate, a number out of range,
/// nesting past 128 levels) or changes (a repeated key keeps its last value),
/// and sinks refuse a repeated key: such a value is built as a `Value`
/// instead, as it always was. This walk allocates only for an object's keys.
fn plain(text: &str) -> bool {
    serde_json::from_str::<Plain>(text).is_ok()
}

/// Any JSON value without a repeated key; see [`plain`].
struct Plain;

impl<'de> Deserialize<'de> for Plain {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Plain, D::Error> {
        use serde::de::{Error, SeqAccess};

        struct Any;
        impl<'de> Visitor<'de> for Any {
            type Value = Plain;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E: Error>(self, _: bool) -> Result<Plain, E> {
                Ok(Plain)
            }
            fn visit_i64<E: Error>(self, _: i64) -> Result<Plain, E> {
                Ok(Plain)
            }
            fn visit_u64<E: Error>(self, _: u64) -> Result<Plain, E> {
                Ok(Plain)
            }
            fn visit_f64<E: Error>(self, _: f64) -> Result<Plain, E> {
                Ok(Plain)
            }
            fn visit_str<E: Error>(self, _: &str) -> Result<Plain, E> {
                Ok(Plain)
            }
            fn visit_unit<E: Error>(self) -> Result<Plain, E> {
                Ok(Plain)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Plain, A::Error> {
                while seq.next_element::<Plain>()?.is_some() {}
                Ok(Plain)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Plain, A::Error> {
                // A scan for few keys, a set past them: a message may hold
                // an object of 100,000 keys.
                let mut keys: Vec<Cow<'de, str>> = Vec::new();
                let mut set: Option<std::collections::HashSet<Cow<'de, str>>> = None;
                while let Some(KeyText(key)) = map.next_key()? {
                    let repeated = match &mut set {
                        Some(set) => !set.insert(key),
                        None if keys.contains(&key) => true,
                        None => {
                            keys.push(key);
                            if keys.len() > 16 {
                                set = Some(keys.drain(..).collect());
                            }
                            false
                        }
                    };
                    if repeated {
                        return Err(A::Error::custom("a key twice in an object"));
                    }
                    map.next_value::<Plain>()?;
                }
                Ok(Plain)
            }
        }
        deserializer.deserialize_any(Any)
    }
}

/// An object's key, borrowed where it holds no escape.
struct KeyText<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for KeyText<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<KeyText<'de>, D::Error> {
        use serde::de::Error;

        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = KeyText<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: Error>(self, v: &'de str) -> Result<KeyText<'de>, E> {
                Ok(KeyText(Cow::Borrowed(v)))
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<KeyText<'de>, E> {
                Ok(KeyText(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// Appends JSON text to `out` on one line: every sink's wire form is a line
/// per document. JSON strings cannot hold a raw line break, so any in the text
/// is whitespace between tokens, and becomes a space.
fn write_raw(text: &str, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(text.as_bytes());
    if text.bytes().any(|b| b == b'\n' || b == b'\r') {
        for b in &mut out[start..] {
            if *b == b'\n' || *b == b'\r' {
                *b = b' ';
            }
        }
    }
}

/// Appends `text` as a JSON string to `out`, escaped as `serde_json` escapes
/// (quote, backslash, control characters): the runs between those bytes,
/// found eight at a time, are copied whole.
pub fn write_str(text: &str, out: &mut Vec<u8>) {
    let mut rest = text.as_bytes();
    out.reserve(rest.len() + 2);
    out.push(b'"');
    while let Some(at) = first_escape(rest) {
        out.extend_from_slice(&rest[..at]);
        write_escape(rest[at], out);
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// Appends the JSON escape of a byte that needs one.
fn write_escape(byte: u8, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match byte {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        _ => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 0xf)],
        ]),
    }
}

/// Whether JSON must escape a byte of `bytes`.
fn needs_escape(bytes: &[u8]) -> bool {
    first_escape(bytes).is_some()
}

/// Where the first byte JSON must escape is in `bytes`: eight at a time,
/// each word tested for a control byte, a quote or a backslash without a
/// branch per byte.
fn first_escape(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    // A byte of `x` below `n` (n <= 0x80) sets its high bit here. A borrow
    // can also flag bytes above one truly flagged, never below: the lowest
    // flag (the first byte, read little-endian) is always a true one.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let zero = |x: u64| below(x, 1);
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        let x = u64::from_le_bytes(word.try_into().unwrap_or_default());
        let found = below(x, 0x20)
            | zero(x ^ (ONES * u64::from(b'"')))
            | zero(x ^ (ONES * u64::from(b'\\')));
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    let tail = words.remainder();
    let found = tail
        .iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\');
    found.map(|i| at + i)
}

/// The part of `whole` that `part` is (a slice of it), borrowed for as long
/// as `whole` borrows, else copied.
pub fn part_of<'a>(whole: &Cow<'a, str>, part: &str) -> Cow<'a, str> {
    match whole {
        Cow::Borrowed(w) => {
            let start = (part.as_ptr() as usize).wrapping_sub(w.as_ptr() as usize);
            match w.get(start..start.wrapping_add(part.len())) {
                Some(slice) if slice.as_ptr() == part.as_ptr() => Cow::Borrowed(slice),
                _ => Cow::Owned(part.to_owned()),
            }
        }
        Cow::Owned(_) => Cow::Owned(part.to_owned()),
    }
}

/// The delivery id; the Elasticsearch `_id`.
pub const ID: &str = "@id";
/// The event time, RFC 3339 UTC with milliseconds.
pub const TIMESTAMP: &str = "@timestamp";
/// The log line as CloudWatch Logs holds it.
pub const MESSAGE: &str = "@message";
/// The AWS account owning the log group.
pub const OWNER: &str = "@owner";
/// Log group name.
pub const LOG_GROUP: &str = "@log_group";
/// Log stream name.
pub const LOG_STREAM: &str = "@log_stream";

/// The documents of a record's events, before transforms, in event order.
pub fn from_data(data: LogData<'_>) -> impl Iterator<Item = Document<'_>> {
    let LogData {
        owner,
        log_group,
        log_stream,
        log_events,
        ..
    } = data;
    log_events
        .into_iter()
        .map(move |event| from_event(&owner, &log_group, &log_stream, event))
}

/// The document of one event, before transforms.
pub fn from_event<'a>(
    owner: &Cow<'a, str>,
    log_group: &Cow<'a, str>,
    log_stream: &Cow<'a, str>,
    event: LogEvent<'a>,
) -> Document<'a> {
    // Room for what transforms typically add (a VPC flow record has 14 fields).
    let mut doc = Document::with_capacity(24);
    doc.fields.extend([
        (Key::Borrowed(ID), Field::Text(event.id)),
        (Key::Borrowed(TIMESTAMP), Field::Time(event.timestamp)),
        (Key::Borrowed(MESSAGE), Field::Text(event.message)),
        (Key::Borrowed(OWNER), Field::Text(owner.clone())),
        (Key::Borrowed(LOG_GROUP), Field::Text(log_group.clone())),
        (Key::Borrowed(LOG_STREAM), Field::Text(log_stream.clone())),
    ]);
    for (name, value) in event.extracted_fields.into_iter().flatten() {
        // A field keeps its text in every event, and what it reads as goes
        // beside it, under a name of its own for each kind: `$name` for a JSON
        // object, `$name_number` for a number (always a float, so that any
        // number fits the mapping the first one made). A field that is a
        // number in one event, an object in the next and text in a third
        // (`size` is `-` for a 304; a Lambda line's last field is JSON or not)
        // can then break no index mapping, and no later event is refused.
        match typed(&value) {
            Some(Typed::Object(object)) => doc.insert_absent(format!("${name}"), object),
            Some(Typed::Number(n)) => doc.insert_absent(format!("${name}_number"), n),
            None => {}
        }
        // The `@` fields are ours; a filter pattern field cannot replace them.
        doc.insert_absent(name, value);
    }
    doc
}

/// What an extracted field's text reads as, when it is more than text.
enum Typed {
    /// All digits: a number.
    Number(Value),
    /// A JSON object.
    Object(Value),
}

fn typed(value: &Value) -> Option<Typed> {
    let Value::String(text) = value else {
        return None;
    };
    // A number with a leading zero (an account id, a zip code) is text.
    if !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && !(text.len() > 1 && text.starts_with('0'))
        && let Ok(n) = text.parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(n)
    {
        return Some(Typed::Number(Value::Number(n)));
    }
    if text.starts_with('{')
        && let Ok(Value::Object(object)) = serde_json::from_str(text)
    {
        return Some(Typed::Object(Value::Object(object)));
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn data(extracted: Option<Value>) -> (LogData<'static>, LogEvent<'static>) {
        let event = LogEvent {
            id: "31953106606966983378809025079804211143289615424298221568".into(),
            timestamp: 1_432_826_855_000,
            message: "127.0.0.1 frank GET 200 1534".into(),
            extracted_fields: extracted.map(|v| v.as_object().unwrap().clone()),
        };
        let data = LogData {
            owner: "123456789012".into(),
            log_group: "CloudTrail".into(),
            log_stream: "123456789012_CloudTrail_us-east-1".into(),
            subscription_filters: vec!["Destination".into()],
            log_events: vec![],
        };
        (data, event)
    }

    /// A document's fields are moved and written as a block: a field stays
    /// four words wide (a `Value` with ordered objects is several times that).
    #[test]
    fn a_field_is_small() {
        assert!(
            std::mem::size_of::<Field>() <= 32,
            "{}",
            std::mem::size_of::<Field>()
        );
    }

    /// A time outside four-digit years names no index or object: those
    /// fall back to the time of delivery.
    #[test]
    fn only_a_time_a_cluster_takes_is_read_as_one() {
        let (first, last) = (*WRITABLE_MILLIS.start(), *WRITABLE_MILLIS.end());
        for (millis, read) in [
            (first, Some(first)),
            (last, Some(last)),
            (first - 1, None),
            (last + 1, None),
            (i64::MIN, None),
            (i64::MAX, None),
        ] {
            assert_eq!(Field::Time(millis).as_millis(), read, "{millis}");
        }
        assert_eq!(Field::from("0000-01-01T00:00:00Z").as_millis(), Some(first));
        assert_eq!(Field::from("9999-12-31T23:59:59-23:59").as_millis(), None);
    }

    #[test]
    fn fields_keep_their_order_and_replace_in_place() {
        let mut doc = Document::new();
        doc.insert(ID, json!("1"));
        doc.insert("b", json!(2));
        doc.insert(String::from("a"), json!(3));
        assert_eq!(doc.insert(ID, json!("2")), Some(Field::from(json!("1"))));
        doc.insert_absent("b", json!("kept?"));
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"@id":"2","b":2,"a":3}"#
        );
        assert_eq!(doc["missing"], Value::Null);
        assert_eq!(doc.remove("b"), Some(Field::from(json!(2))));
        assert_eq!(doc.len(), 2);
        let back: Document = serde_json::from_str(r#"{"z":1,"a":{"n":[1]},"z":2}"#).unwrap();
        assert_eq!(
            back.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            ["z", "a"],
            "a repeated key keeps its place and its last value"
        );
        assert_eq!(back["z"], 2);
        assert!(serde_json::from_str::<Document>("[1]").is_err());
    }

    proptest::proptest! {
        /// Whatever names go in and out (few letters, so that they come
        /// back often, and mostly past the count that builds the hash
        /// index), a lookup finds exactly what a map of the same names holds.
        #[test]
        fn lookups_find_what_a_map_holds(
            ops in proptest::collection::vec(("[ab@_]{0,3}", proptest::bool::weighted(0.9)), 20..200),
            probes in proptest::collection::vec("[ab@_]{0,3}", 0..20),
        ) {
            let mut doc = Document::new();
            let mut model = std::collections::HashMap::new();
            for (i, (name, add)) in ops.iter().enumerate() {
                if *add {
                    doc.insert(name.clone(), json!(i));
                    model.insert(name.clone(), i);
                } else {
                    proptest::prop_assert_eq!(doc.remove(name).is_some(), model.remove(name).is_some());
                }
            }
            for name in probes.iter().chain(model.keys()) {
                proptest::prop_assert_eq!(doc.get(name).and_then(Field::as_u64), model.get(name).map(|&i| i as u64));
            }
            proptest::prop_assert_eq!(doc.len(), model.len());
        }

        /// The hand-written writer says what `serde_json` says of the same
        /// document, for any text: quotes, backslashes, control characters,
        /// any Unicode, in keys, text and nested values alike.
        #[test]
        fn written_json_is_what_serde_json_writes(
            fields in proptest::collection::vec(("\\PC{0,12}|[\"\\\\\u{0}-\u{1f}\u{7f}a]{0,40}", "\\PC{0,80}|[\"\\\\\u{0}-\u{1f}\u{7f}\u{2028}é]{0,80}"), 0..8),
            long in "[a-z]{0,70}[\"\n]?",
        ) {
            let mut doc = Document::new();
            for (i, (key, text)) in fields.iter().enumerate() {
                doc.insert(key.clone(), text.clone());
                doc.insert(format!("n{i}"), json!({ key.clone(): [text, i, null] }));
            }
            doc.insert("long", long.as_str());
            let mut out = Vec::new();
            doc.write_json(&mut out);
            proptest::prop_assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&doc).unwrap()
            );
        }

        /// An object read one level deep and written again is the same JSON
        /// as serde_json reads it, whatever its text and nesting.
        #[test]
        fn an_object_read_one_level_deep_writes_what_it_read(
            fields in proptest::collection::vec(("\\PC{0,8}|[\"\\\\\u{0}-\u{1f}a]{0,6}", "\\PC{0,20}|[\"\\\\\u{0}-\u{1f}\u{2028}é]{0,20}"), 0..8),
            spaced in proptest::bool::ANY,
        ) {
            let mut object = serde_json::Map::new();
            for (i, (key, text)) in fields.iter().enumerate() {
                object.insert(key.clone(), json!(text));
                object.insert(format!("n{i}"), json!({ key.clone(): [text, i, null, {"f": 1.5}] }));
            }
            let value = Value::Object(object);
            let text = if spaced {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                value.to_string()
            };
            let doc = Document::parse_object(&text).unwrap();
            let mut out = Vec::new();
            doc.write_json(&mut out);
            proptest::prop_assert!(!out.contains(&b'\n') && !out.contains(&b'\r'), "one line");
            proptest::prop_assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), value.clone());
            proptest::prop_assert_eq!(Value::from(doc), value);
        }
    }

    proptest::proptest! {
        /// Text is written as serde_json writes it, whatever bytes it holds
        /// and wherever they are (runs of few letters between them, so that
        /// words of eight hold several).
        #[test]
        fn text_is_escaped_as_serde_json_escapes_it(
            parts in proptest::collection::vec(
                proptest::prop_oneof!["[a-zé]{0,9}", "[\\x00-\\x1f\"\\\\\\x7f/]{1,3}", "\\PC{0,5}"],
                0..12,
            ),
        ) {
            let text = parts.concat();
            let mut out = Vec::new();
            write_str(&text, &mut out);
            proptest::prop_assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&text).unwrap()
            );
        }
    }

    #[test]
    fn every_byte_json_escapes_is_found_wherever_it_is() {
        for len in 0..20 {
            assert!(!needs_escape("é".repeat(len).as_bytes()));
            assert!(!needs_escape(&vec![0x7f; len]));
            for at in 0..len {
                for b in (0..0x20).chain([b'"', b'\\']) {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = b;
                    assert_eq!(first_escape(&bytes), Some(at), "{b:#x} at {at} of {len}");
                    // A later one, and one in the same word, do not hide it.
                    bytes.push(b'"');
                    if at + 1 < len {
                        bytes[at + 1] = 0;
                    }
                    assert_eq!(first_escape(&bytes), Some(at), "{b:#x} at {at} of {len}");
                }
            }
        }
    }

    /// Text without escapes in a parsed object is a view into what was
    /// parsed; text with escapes is unescaped into a copy.
    #[test]
    fn parsed_text_borrows_where_it_can() {
        let text = r#"{"plain":"ann","escaped":"a\"b","n":1,"o":{"k":"v"}}"#;
        let doc: Document = serde_json::from_str(text).unwrap();
        assert!(matches!(doc["plain"], Field::Text(Cow::Borrowed("ann"))));
        assert!(matches!(&doc["escaped"], Field::Text(Cow::Owned(t)) if t == "a\"b"));
        assert_eq!(doc["n"], 1);
        assert_eq!(doc["o"]["k"], "v");
    }

    /// A message object read one level deep: text borrows, objects and
    /// arrays are their JSON text as it came (spaces and escapes kept), and
    /// what is not one JSON object is refused.
    #[test]
    fn an_object_is_read_one_level_deep() {
        let text = r#"{"plain":"ann","escaped":"a\"b","n":1.5,"o": { "k" : "v\/" },"a":[1, {"x":null}],"z":1,"z":2}"#;
        let doc = Document::parse_object(text).unwrap();
        assert!(matches!(doc["plain"], Field::Text(Cow::Borrowed("ann"))));
        assert!(matches!(&doc["escaped"], Field::Text(Cow::Owned(t)) if t == "a\"b"));
        assert_eq!(doc["n"], 1.5);
        assert!(
            matches!(&doc["o"], Field::Raw(Cow::Borrowed(r)) if r.get() == r#"{ "k" : "v\/" }"#)
        );
        assert_eq!(doc["o"], json!({"k": "v/"}));
        assert_eq!(doc["z"], 2, "a repeated key keeps its last value");
        let mut out = Vec::new();
        doc.write_json(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"plain":"ann","escaped":"a\"b","n":1.5,"o":{ "k" : "v\/" },"a":[1, {"x":null}],"z":2}"#
        );
        assert_eq!(
            Value::from(doc.clone().into_owned()),
            serde_json::from_str::<Value>(text).unwrap()
        );
        for bad in [
            "[1]",
            "{",
            "{\"a\":}",
            "{\"a\":1} x",
            "{\"a\":[1,}",
            "\"s\"",
            "",
        ] {
            assert!(Document::parse_object(bad).is_none(), "{bad}");
        }
        // What serde_json's Value builder refuses refuses the message, as it
        // did: a number no f64 holds (with or without an exponent, or by its
        // own rounding), a lone surrogate, nesting past 128 levels.
        let huge = format!(r#"{{"o":[{}]}}"#, "9".repeat(400));
        let long = format!(r#"{{"o":[1{}e99]}}"#, "0".repeat(210));
        let deep = format!(r#"{{"o":{}{}}}"#, "[".repeat(200), "]".repeat(200));
        for bad in [
            r#"{"o":{"n":1e400}}"#,
            r#"{"o":[-1E+999]}"#,
            r#"{"o":[1.7976931348623159e308]}"#,
            r#"{"o":["\ud800"]}"#,
            &huge,
            &long,
            &deep,
        ] {
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad}");
            assert!(Document::parse_object(bad).is_none(), "{bad}");
        }
        // A key twice in a nested object (a sink refuses it) keeps its last
        // value, as it did, however it is written.
        let twice =
            Document::parse_object(r#"{"o":{"a":1,"\u0061":2},"p":[{"b":1,"b":[3]}]}"#).unwrap();
        assert!(matches!(twice["o"], Field::Object(_)));
        let mut out = Vec::new();
        twice.write_json(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"o":{"a":2},"p":[{"b":[3]}]}"#
        );
        let many: String = (0..40).map(|i| format!(r#""k{i}":{i},"#)).collect();
        let many_twice = format!(r#"{{"o":{{{many}"k7":0}}}}"#);
        assert!(matches!(
            Document::parse_object(&many_twice).unwrap()["o"],
            Field::Object(_)
        ));
        let many_once = format!(r#"{{"o":{{{many}"k40":0}}}}"#);
        assert!(matches!(
            Document::parse_object(&many_once).unwrap()["o"],
            Field::Raw(_)
        ));
        let fine = Document::parse_object(
            r#"{"o":{"t":"1e400 \" 1e400","n":[1e300,-2.5E-400,18446744073709551616]}}"#,
        )
        .unwrap();
        assert!(matches!(fine["o"], Field::Raw(_)));
    }

    #[test]
    fn seed_field_names() {
        let (mut data, event) = data(None);
        data.log_events.push(event);
        let docs: Vec<_> = from_data(data).collect();
        assert_eq!(docs.len(), 1);
        assert_eq!(
            Value::from(docs[0].clone()),
            json!({
                "@id": "31953106606966983378809025079804211143289615424298221568",
                "@timestamp": "2015-05-28T15:27:35.000Z",
                "@message": "127.0.0.1 frank GET 200 1534",
                "@owner": "123456789012",
                "@log_group": "CloudTrail",
                "@log_stream": "123456789012_CloudTrail_us-east-1",
            })
        );
    }

    /// The seed's own Lambda payload: the last field `event` is a JSON object
    /// in the first event and text in the second. Both keep `event` as text, so
    /// neither can be refused by a mapping the other made.
    #[test]
    fn a_field_that_is_json_in_one_event_and_text_in_the_next_keeps_one_type() {
        let payload = r#"{"messageType":"DATA_MESSAGE","owner":"123456789012","logGroup":"/aws/lambda/HelloWorld","logStream":"2015/06/30/1f77bc4743204b22b0d42cf3b85f40c7","subscriptionFilters":["function-logs"],"logEvents":[
            {"id":"49545295115971876468408574808414755329919666212443258898","timestamp":"1421116133213","message":"2015-01-13T02:28:53.213Z c342155b-1ec0-11e5-b0e2-f317438eb2f6 { \"key1\": 100, \"key2\": \"value\", \"key3\": { \"key4\": \"level2\" } }","extractedFields":{"timestamp":"2015-01-13T02:28:53.213Z","request_id":"c342155b-1ec0-11e5-b0e2-f317438eb2f6","event":"{ \"key1\": 100, \"key2\": \"value\", \"key3\": { \"key4\": \"level2\" } }"}},
            {"id":"49545295115971876468408574808465530214343150403450640305","timestamp":"1421116143456","message":"2015-01-13T02:29:03.456Z c342155b-1ec0-11e5-b0e2-f317438eb2f6 Hello World","extractedFields":{"timestamp":"2015-01-13T02:29:03.456Z","request_id":"c342155b-1ec0-11e5-b0e2-f317438eb2f6","event":"Hello World"}}]}"#;
        let data: LogData = serde_json::from_str(payload).unwrap();
        let docs: Vec<Document> = from_data(data).collect();
        assert_eq!(
            docs[0]["event"],
            r#"{ "key1": 100, "key2": "value", "key3": { "key4": "level2" } }"#
        );
        assert_eq!(
            docs[0]["$event"],
            json!({"key1": 100, "key2": "value", "key3": {"key4": "level2"}})
        );
        assert_eq!(docs[1]["event"], "Hello World");
        assert!(!docs[1].contains_key("$event"));
        for field in ["timestamp", "request_id", "event"] {
            assert!(
                docs.iter().all(|d| d[field].is_string()),
                "{field} is text in every event"
            );
        }
    }

    #[test]
    fn many_fields_are_found_through_the_index() {
        let mut doc = Document::new();
        for i in 0..1000 {
            doc.insert(format!("k{i}"), json!(i));
        }
        doc.insert_absent("k500", json!("kept?"));
        assert_eq!(
            doc.insert("k999", json!("last")),
            Some(Field::from(json!(999)))
        );
        assert_eq!(
            (doc.len(), doc["k500"].to_value(), doc["k999"].to_value()),
            (1000, json!(500), json!("last"))
        );
        assert_eq!(doc.remove("k0"), Some(Field::from(json!(0))));
        assert_eq!(
            (doc["k1"].to_value(), doc["k0"].to_value(), doc.len()),
            (json!(1), Value::Null, 999)
        );
        doc.insert("k0", json!("back"));
        assert_eq!(
            doc.iter().last().map(|(k, _)| k),
            Some("k0"),
            "appended at the end"
        );
        let text = serde_json::to_string(&doc).unwrap();
        let parsed: Document = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, doc);
    }

    #[test]
    fn extracted_fields_are_typed() {
        let (data, event) = data(Some(json!({
            "ip": "127.0.0.1", "status": "200", "bytes": "1534", "account": "012345678901",
            "request": "{\"path\":\"/a\",\"n\":1}", "broken": "{not json", "empty": "", "zero": "0",
            "@id": "spoofed",
        })));
        let doc = from_event(&data.owner, &data.log_group, &data.log_stream, event);
        assert_eq!(doc["ip"], "127.0.0.1");
        assert_eq!(doc["$ip"], Value::Null);
        assert_eq!(doc["$ip_number"], Value::Null);
        assert_eq!(
            (doc["status"].to_value(), doc["$status_number"].to_value()),
            (json!("200"), json!(200.0))
        );
        // The reading of each kind has a name of its own, and a number past
        // i64 is still a number a float mapping takes.
        let typed = |fields: Value| {
            let (d, e) = self::data(Some(fields));
            from_event(&d.owner, &d.log_group, &d.log_stream, e)
        };
        let object = typed(json!({"body": "{\"user\":\"ann\"}", "size": "18446744073709551615"}));
        assert_eq!(object["$body"], json!({"user": "ann"}));
        assert!(matches!(&object["$size_number"], Field::Number(n) if n.is_f64()));
        let number = typed(json!({"body": "200"}));
        assert!(!number.contains_key("$body") && number["$body_number"] == 200.0);
        assert_eq!(doc["$bytes_number"], 1534.0);
        assert_eq!(doc["$zero_number"], 0.0);
        assert_eq!(doc["account"], "012345678901");
        assert!(
            !doc.contains_key("$account_number"),
            "a leading zero is text"
        );
        assert_eq!(doc["request"], "{\"path\":\"/a\",\"n\":1}");
        assert_eq!(doc["$request"], json!({"path": "/a", "n": 1}));
        assert_eq!(doc["broken"], "{not json");
        assert!(!doc.contains_key("$broken"));
        assert_eq!(doc["empty"], "");
        assert_eq!(
            doc["@id"],
            "31953106606966983378809025079804211143289615424298221568"
        );
    }
}
