//! The document a log event becomes, with the field names of the CloudWatch Logs
//! Subscription Consumer: `@id`, `@timestamp`, `@message`, `@owner`,
//! `@log_group`, `@log_stream`, plus extracted fields and what transforms add.

use std::borrow::Cow;
use std::hash::BuildHasher;

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
/// A vector rather than a map: most documents have a few dozen fields at most,
/// which a scan finds faster than a hash. Past [`INDEXED_FROM`] fields a hash
/// index of positions is kept beside it, so that a message of 100,000 keys costs
/// their number, not its square (anyone who can write to a log group chooses
/// the keys).
#[derive(Clone, Debug, Default)]
pub struct Document {
    fields: Vec<(Key, Value)>,
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
    fn of(fields: &[(Key, Value)]) -> Index {
        let mut index = Index::default();
        for (i, (key, _)) in fields.iter().enumerate() {
            index.add(fields, key, i);
        }
        index
    }

    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    fn find(&self, fields: &[(Key, Value)], key: &str) -> Option<usize> {
        self.positions
            .find(self.hash(key), |&i| fields[i].0 == key)
            .copied()
    }

    fn add(&mut self, fields: &[(Key, Value)], key: &str, at: usize) {
        let hasher = &self.hasher;
        self.positions
            .insert_unique(hasher.hash_one(key), at, |&i| {
                hasher.hash_one(fields[i].0.as_ref())
            });
    }
}

impl PartialEq for Document {
    fn eq(&self, other: &Document) -> bool {
        self.fields == other.fields
    }
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
            index: None,
        }
    }

    fn position(&self, key: &str) -> Option<usize> {
        match &self.index {
            Some(index) => index.find(&self.fields, key),
            None => self.fields.iter().position(|(k, _)| k == key),
        }
    }

    /// Appends a field known to be absent.
    fn push(&mut self, key: Key, value: Value) {
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
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.position(key).map(|i| &self.fields[i].1)
    }

    /// The value of a field, to change in place.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.position(key).map(|i| &mut self.fields[i].1)
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
                self.push(key, value);
                None
            }
        }
    }

    /// Sets a field unless it is already present.
    pub fn insert_absent(&mut self, key: impl Into<Key>, value: Value) {
        let key = key.into();
        if !self.contains_key(&key) {
            self.push(key, value);
        }
    }

    /// Removes a field (rare: the positions after it are indexed again).
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.position(key)?;
        let (_, value) = self.fields.remove(i);
        if self.index.is_some() {
            self.index = Some(Index::of(&self.fields));
        }
        Some(value)
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
        assert_eq!(doc.insert("k999", json!("last")), Some(json!(999)));
        assert_eq!(
            (doc.len(), &doc["k500"], &doc["k999"]),
            (1000, &json!(500), &json!("last"))
        );
        assert_eq!(doc.remove("k0"), Some(json!(0)));
        assert_eq!(
            (doc["k1"].clone(), doc["k0"].clone(), doc.len()),
            (json!(1), Value::Null, 999)
        );
        doc.insert("k0", json!("back"));
        assert_eq!(
            doc.iter().last().map(|(k, _)| k),
            Some("k0"),
            "appended at the end"
        );
        let parsed: Document = serde_json::from_str(&serde_json::to_string(&doc).unwrap()).unwrap();
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
            (&doc["status"], &doc["$status_number"]),
            (&json!("200"), &json!(200.0))
        );
        // The reading of each kind has a name of its own, and a number past
        // i64 is still a number a float mapping takes.
        let typed = |fields: Value| {
            let (d, e) = self::data(Some(fields));
            from_event(&d.owner, &d.log_group, &d.log_stream, e)
        };
        let object = typed(json!({"body": "{\"user\":\"ann\"}", "size": "18446744073709551615"}));
        assert_eq!(object["$body"], json!({"user": "ann"}));
        assert!(object["$size_number"].is_f64());
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
