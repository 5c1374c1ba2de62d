//! The document a log event becomes, with the field names of the CloudWatch Logs
//! Subscription Consumer: `@id`, `@timestamp`, `@message`, `@owner`,
//! `@log_group`, `@log_stream`, plus extracted fields and what transforms add.

use std::borrow::Cow;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use super::decode::cloudwatch::{LogData, LogEvent};
use crate::time::rfc3339_millis;

/// A field name: most are known in advance and borrowed, so building a
/// document allocates for its values only.
pub type Key = Cow<'static, str>;

/// A document: a JSON object whose fields keep the order they were added in.
///
/// A vector rather than a map: documents have a few dozen fields at most, which
/// a scan finds faster than a tree, and every event builds one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Document {
    fields: Vec<(Key, Value)>,
}

impl Document {
    /// An empty document.
    pub fn new() -> Document {
        Document::default()
    }

    /// An empty document with room for `n` fields.
    pub fn with_capacity(n: usize) -> Document {
        Document {
            fields: Vec::with_capacity(n),
        }
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.fields.iter().position(|(k, _)| k == key)
    }

    /// The value of a field.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value of a field, to change in place.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.fields
            .iter_mut()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Whether a field is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Sets a field, replacing (in place) and returning any previous value.
    pub fn insert(&mut self, key: impl Into<Key>, value: Value) -> Option<Value> {
        let key = key.into();
        match self.position(&key) {
            Some(i) => Some(std::mem::replace(&mut self.fields[i].1, value)),
            None => {
                self.fields.push((key, value));
                None
            }
        }
    }

    /// Sets a field unless it is already present.
    pub fn insert_absent(&mut self, key: impl Into<Key>, value: Value) {
        let key = key.into();
        if !self.contains_key(&key) {
            self.fields.push((key, value));
        }
    }

    /// Removes a field.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.position(key).map(|i| self.fields.remove(i).1)
    }

    /// The fields, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
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
}

impl std::ops::Index<&str> for Document {
    type Output = Value;

    /// The value of a field, `null` when absent (as `serde_json::Value` indexes).
    fn index(&self, key: &str) -> &Value {
        static NULL: Value = Value::Null;
        self.get(key).unwrap_or(&NULL)
    }
}

impl IntoIterator for Document {
    type Item = (Key, Value);
    type IntoIter = std::vec::IntoIter<(Key, Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.fields.into_iter()
    }
}

impl<K: Into<Key>> Extend<(K, Value)> for Document {
    fn extend<I: IntoIterator<Item = (K, Value)>>(&mut self, fields: I) {
        for (k, v) in fields {
            self.insert(k, v);
        }
    }
}

impl<K: Into<Key>> FromIterator<(K, Value)> for Document {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(fields: I) -> Document {
        let mut doc = Document::new();
        doc.extend(fields);
        doc
    }
}

impl From<Map<String, Value>> for Document {
    fn from(map: Map<String, Value>) -> Document {
        map.into_iter().collect()
    }
}

impl From<Document> for Value {
    fn from(doc: Document) -> Value {
        Value::Object(
            doc.fields
                .into_iter()
                .map(|(k, v)| (k.into_owned(), v))
                .collect(),
        )
    }
}

impl Serialize for Document {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.fields.len()))?;
        for (k, v) in &self.fields {
            map.serialize_entry(k.as_ref(), v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Document {
    /// A JSON object; a repeated key keeps its last value, as `serde_json` does.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Document, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = Document;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Document, A::Error> {
                let mut doc = Document::with_capacity(access.size_hint().unwrap_or(8));
                while let Some((k, v)) = access.next_entry::<String, Value>()? {
                    doc.insert(k, v);
                }
                Ok(doc)
            }
        }
        deserializer.deserialize_map(Fields)
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
pub fn from_data(data: LogData) -> impl Iterator<Item = Document> {
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
pub fn from_event(owner: &str, log_group: &str, log_stream: &str, event: LogEvent) -> Document {
    // Room for what transforms typically add (a VPC flow record has 14 fields).
    let mut doc = Document::with_capacity(24);
    doc.fields.extend([
        (Key::Borrowed(ID), Value::String(event.id)),
        (
            Key::Borrowed(TIMESTAMP),
            Value::String(rfc3339_millis(event.timestamp)),
        ),
        (Key::Borrowed(MESSAGE), Value::String(event.message)),
        (Key::Borrowed(OWNER), Value::from(owner)),
        (Key::Borrowed(LOG_GROUP), Value::from(log_group)),
        (Key::Borrowed(LOG_STREAM), Value::from(log_stream)),
    ]);
    for (name, value) in event.extracted_fields.into_iter().flatten() {
        // The `@` fields are ours; a filter pattern field cannot replace them.
        doc.insert_absent(name, typed(value));
    }
    doc
}

/// An extracted field's value: all digits → a number, a JSON object → that
/// object, anything else as text.
fn typed(value: Value) -> Value {
    let Value::String(text) = &value else {
        return value;
    };
    if !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = text.parse::<u64>()
    {
        // A number with a leading zero (an account id, a zip code) keeps its text.
        if !(text.len() > 1 && text.starts_with('0')) {
            return Value::from(n);
        }
    }
    if text.starts_with('{')
        && let Ok(Value::Object(object)) = serde_json::from_str(text)
    {
        return Value::Object(object);
    }
    value
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn data(extracted: Option<Value>) -> (LogData, LogEvent) {
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

    #[test]
    fn fields_keep_their_order_and_replace_in_place() {
        let mut doc = Document::new();
        doc.insert(ID, json!("1"));
        doc.insert("b", json!(2));
        doc.insert(String::from("a"), json!(3));
        assert_eq!(doc.insert(ID, json!("2")), Some(json!("1")));
        doc.insert_absent("b", json!("kept?"));
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"@id":"2","b":2,"a":3}"#
        );
        assert_eq!(doc["missing"], Value::Null);
        assert_eq!(doc.remove("b"), Some(json!(2)));
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

    #[test]
    fn extracted_fields_are_typed() {
        let (data, event) = data(Some(json!({
            "ip": "127.0.0.1", "status": "200", "bytes": "1534", "account": "012345678901",
            "request": "{\"path\":\"/a\",\"n\":1}", "broken": "{not json", "empty": "", "zero": "0",
            "@id": "spoofed",
        })));
        let doc = from_event(&data.owner, &data.log_group, &data.log_stream, event);
        assert_eq!(doc["ip"], "127.0.0.1");
        assert_eq!(doc["status"], 200);
        assert_eq!(doc["bytes"], 1534);
        assert_eq!(doc["zero"], 0);
        assert_eq!(doc["account"], "012345678901");
        assert_eq!(doc["request"], json!({"path": "/a", "n": 1}));
        assert_eq!(doc["broken"], "{not json");
        assert_eq!(doc["empty"], "");
        assert_eq!(
            doc["@id"],
            "31953106606966983378809025079804211143289615424298221568"
        );
    }
}
