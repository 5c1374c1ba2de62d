//! The document a log event becomes, with the field names of the CloudWatch Logs
//! Subscription Consumer: `@id`, `@timestamp`, `@message`, `@owner`,
//! `@log_group`, `@log_stream`, plus extracted fields and what transforms add.

use serde_json::{Map, Value};

use super::decode::cloudwatch::{LogData, LogEvent};
use crate::time::rfc3339_millis;

/// A document: a JSON object.
pub type Document = Map<String, Value>;

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
    let mut doc = Document::new();
    doc.insert(ID.into(), Value::String(event.id));
    doc.insert(
        TIMESTAMP.into(),
        Value::String(rfc3339_millis(event.timestamp)),
    );
    doc.insert(MESSAGE.into(), Value::String(event.message));
    doc.insert(OWNER.into(), Value::from(owner));
    doc.insert(LOG_GROUP.into(), Value::from(log_group));
    doc.insert(LOG_STREAM.into(), Value::from(log_stream));
    for (name, value) in event.extracted_fields.into_iter().flatten() {
        // The `@` fields are ours; a filter pattern field cannot replace them.
        if !doc.contains_key(&name) {
            let value = typed(value);
            doc.insert(name, value);
        }
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
    fn seed_field_names() {
        let (mut data, event) = data(None);
        data.log_events.push(event);
        let docs: Vec<_> = from_data(data).collect();
        assert_eq!(docs.len(), 1);
        assert_eq!(
            Value::Object(docs[0].clone()),
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
