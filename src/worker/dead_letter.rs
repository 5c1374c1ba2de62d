//! Dead letters: what cannot be delivered as a document, in one shape wherever
//! it comes from (a record that cannot be decoded, a record over its
//! processing budget, a document the sink refuses for good), with what is
//! needed to find it again and replay it.
//!
//! Every field but the `@` ones every document has sits under `@dead_letter`,
//! so that a dead letter written into the main index (when no dead-letter
//! index is set) cannot clash with the mapping of the documents there.

use base64::Engine;
use serde_json::{Map, Value, json};

use super::document::{Document, ID, LOG_GROUP, LOG_STREAM, MESSAGE, OWNER, TIMESTAMP};
use crate::time::{parse_rfc3339_millis, rfc3339_millis};

/// The field holding everything about a dead letter.
pub const DEAD_LETTER: &str = "@dead_letter";

/// Text kept of a refused document or its message: a dead letter must fit
/// where its document did not.
pub const KEEP_TEXT: usize = 32 << 10;
/// Records up to this size are kept whole (base64) in their dead letter: a
/// Kinesis record is at most 1 MiB, so every record is, unless the sink
/// refused the dead letter as too large (see `to_document_within`).
pub const KEEP_DATA: usize = 1 << 20;

/// Where a dead letter came from: the shard and record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The shard.
    pub shard: String,
    /// The record's sequence number.
    pub sequence: String,
}

/// Why it is a dead letter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Why {
    /// A stable reason: a decode error's category (`not_gzip`, `corrupt_gzip`,
    /// `too_large`, `bad_envelope`, `unknown_message_type`), `too_slow`,
    /// `encode`, or for documents the sink refused, `too_large` or `refused`.
    pub reason: &'static str,
    /// For people: the error.
    pub message: String,
    /// The sink's status for the document, when it refused it.
    pub status: Option<u16>,
    /// The sink's error type, e.g. `mapper_parsing_exception`.
    pub error_type: Option<String>,
}

/// A dead letter, before it is a document.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    why: Why,
    origin: Origin,
    /// `@id`: the refused document's, or one derived from the record's origin,
    /// so that a replay rewrites the same dead letter.
    id: String,
    /// `@timestamp`: the event's time, else the record's arrival in the stream
    /// (stable across replays), else now.
    time: Option<String>,
    /// `@owner`, `@log_group`, `@log_stream` and a (truncated) `@message`,
    /// when the refused document had them.
    fields: Vec<(&'static str, Value)>,
    /// What it was: the document as text, or the record's bytes.
    content: Content,
    /// Where a refused document was meant to go.
    index: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
enum Content {
    Record(Vec<u8>),
    Document(String),
}

impl DeadLetter {
    /// The dead letter of a whole record that did not become documents.
    /// `arrival_millis` is when Kinesis received it.
    pub fn record(
        origin: Origin,
        data: &[u8],
        arrival_millis: Option<i64>,
        why: Why,
    ) -> DeadLetter {
        DeadLetter {
            id: format!("deadletter-{}-{}", origin.shard, origin.sequence),
            time: arrival_millis.map(rfc3339_millis),
            fields: Vec::new(),
            content: Content::Record(data.to_vec()),
            index: None,
            origin,
            why,
        }
    }

    /// The dead letter of a document the sink refused for good: `source` is
    /// the document as sent under `id` (else its own `@id`, if its text can
    /// be read), `index` where it was meant to go.
    pub fn document(
        origin: Origin,
        id: Option<&str>,
        source: &[u8],
        index: Option<&str>,
        why: Why,
    ) -> DeadLetter {
        #[derive(serde::Deserialize, Default)]
        struct Known {
            #[serde(rename = "@id")]
            id: Option<String>,
            #[serde(rename = "@timestamp")]
            timestamp: Option<String>,
            #[serde(rename = "@message")]
            message: Option<String>,
            #[serde(rename = "@owner")]
            owner: Option<String>,
            #[serde(rename = "@log_group")]
            log_group: Option<String>,
            #[serde(rename = "@log_stream")]
            log_stream: Option<String>,
        }
        // Our own encoding: it parses, but a dead letter never depends on it.
        let known: Known = serde_json::from_slice(source).unwrap_or_default();
        let mut fields = Vec::new();
        for (key, value) in [
            (OWNER, known.owner),
            (LOG_GROUP, known.log_group),
            (LOG_STREAM, known.log_stream),
        ] {
            if let Some(value) = value {
                fields.push((key, Value::String(value)));
            }
        }
        if let Some(message) = known.message {
            fields.push((
                MESSAGE,
                Value::String(truncate(&message, KEEP_TEXT).to_owned()),
            ));
        }
        DeadLetter {
            id: id
                .map(str::to_owned)
                .or(known.id)
                .unwrap_or_else(|| format!("deadletter-{}-{}", origin.shard, origin.sequence)),
            // Only a time: the refused document's own may be what was refused.
            time: known
                .timestamp
                .as_deref()
                .and_then(parse_rfc3339_millis)
                .map(rfc3339_millis),
            fields,
            content: Content::Document(String::from_utf8_lossy(source).into_owned()),
            index: index.map(str::to_owned),
            origin,
            why,
        }
    }

    /// Why it is one.
    pub fn why(&self) -> &Why {
        &self.why
    }

    /// Where it came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The dead letter as a document, made at `now_millis`.
    pub fn to_document(&self, now_millis: i64) -> Document<'static> {
        self.to_document_within(now_millis, KEEP_TEXT)
    }

    /// The dead letter as a document, keeping at most `keep` bytes of the
    /// refused text (and of the record's bytes): a cluster that refused a
    /// dead letter as too large is sent a smaller one.
    pub fn to_document_within(&self, now_millis: i64, keep: usize) -> Document<'static> {
        let now = rfc3339_millis(now_millis);
        let mut doc = Document::with_capacity(8);
        doc.insert(ID, Value::String(self.id.clone()));
        doc.insert(
            TIMESTAMP,
            Value::String(self.time.clone().unwrap_or_else(|| now.clone())),
        );
        for (key, value) in &self.fields {
            let value = match value {
                Value::String(text) if text.len() > keep => {
                    Value::String(truncate(text, keep).to_owned())
                }
                other => other.clone(),
            };
            doc.insert(*key, value);
        }
        let mut about = Map::new();
        about.insert("reason".into(), json!(self.why.reason));
        about.insert("message".into(), json!(self.why.message));
        if let Some(status) = self.why.status {
            about.insert("status".into(), json!(status));
        }
        if let Some(error_type) = &self.why.error_type {
            about.insert("error_type".into(), json!(error_type));
        }
        if let Some(index) = &self.index {
            about.insert("index".into(), json!(index));
        }
        about.insert("shard_id".into(), json!(self.origin.shard));
        about.insert("sequence_number".into(), json!(self.origin.sequence));
        about.insert("at".into(), json!(now));
        let (size, truncated) = match &self.content {
            Content::Record(data) => {
                // The same share of the record as of text, kept whole or not at all.
                let keep =
                    data.len() <= (keep.saturating_mul(KEEP_DATA / KEEP_TEXT)).min(KEEP_DATA);
                if keep {
                    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
                    about.insert("data_base64".into(), Value::String(encoded));
                }
                (data.len(), !keep)
            }
            Content::Document(text) => {
                let kept = truncate(text, keep);
                about.insert("document".into(), Value::String(kept.to_owned()));
                (text.len(), kept.len() < text.len())
            }
        };
        about.insert("size".into(), json!(size));
        if truncated {
            about.insert("truncated".into(), Value::Bool(true));
        }
        doc.insert(DEAD_LETTER, Value::Object(about));
        doc
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            shard: "shardId-000000000007".into(),
            sequence: "49590338271490256608559692538361571095921575989136588898".into(),
        }
    }

    #[test]
    fn a_record_that_is_no_payload_is_kept_with_its_origin_at_its_arrival() {
        let why = Why {
            reason: "corrupt_gzip",
            message: "corrupt gzip data: invalid deflate".into(),
            status: None,
            error_type: None,
        };
        let letter =
            DeadLetter::record(origin(), b"\x1f\x8b garbage", Some(1_795_635_868_711), why);
        let doc = Value::from(letter.to_document(1_795_635_999_000));
        assert_eq!(
            doc,
            json!({
                "@id": "deadletter-shardId-000000000007-49590338271490256608559692538361571095921575989136588898",
                "@timestamp": "2026-11-25T19:44:28.711Z",
                "@dead_letter": {
                    "reason": "corrupt_gzip", "message": "corrupt gzip data: invalid deflate",
                    "shard_id": "shardId-000000000007",
                    "sequence_number": "49590338271490256608559692538361571095921575989136588898",
                    "at": "2026-11-25T19:46:39.000Z", "data_base64": "H4sgZ2FyYmFnZQ==", "size": 10,
                }
            })
        );
        let big = DeadLetter::record(
            origin(),
            &vec![0; KEEP_DATA + 1],
            None,
            letter.why().clone(),
        );
        let doc = big.to_document(0);
        assert_eq!(
            doc["@timestamp"], "1970-01-01T00:00:00.000Z",
            "no arrival: now"
        );
        assert_eq!(doc[DEAD_LETTER]["truncated"], true);
        assert!(doc[DEAD_LETTER].get("data_base64").is_none());
    }

    #[test]
    fn a_refused_document_keeps_its_id_time_and_source_truncated_to_fit() {
        let message = "é".repeat(KEEP_TEXT); // two bytes each: cut on a boundary
        let source = serde_json::to_vec(&json!({
            "@id": "3195", "@timestamp": "2026-12-03T08:00:00.000Z", "@message": message,
            "@log_group": "/aws/lambda/f", "@owner": "123456789012", "size": "big",
        }))
        .unwrap();
        let why = Why {
            reason: "too_large",
            message: "413 Request Entity Too Large".into(),
            status: Some(413),
            error_type: Some("too_large".into()),
        };
        let letter = DeadLetter::document(origin(), None, &source, Some("cwl-2026.12.03"), why);
        let doc = letter.to_document(0);
        assert_eq!(doc["@id"], "3195");
        assert_eq!(doc["@timestamp"], "2026-12-03T08:00:00.000Z");
        assert_eq!(doc["@log_group"], "/aws/lambda/f");
        assert!(doc["@message"].as_str().unwrap().len() <= KEEP_TEXT);
        let about = &doc[DEAD_LETTER];
        assert_eq!(
            (&about["reason"], &about["status"], &about["index"]),
            (
                &json!("too_large").into(),
                &json!(413).into(),
                &json!("cwl-2026.12.03").into()
            )
        );
        assert_eq!(about["size"], source.len() as u64);
        assert_eq!(about["truncated"], true);
        assert!(about["document"].as_str().unwrap().len() <= KEEP_TEXT);
        let encoded = serde_json::to_vec(&doc).unwrap();
        assert!(encoded.len() < 3 * KEEP_TEXT, "{} bytes", encoded.len());
        let smaller = serde_json::to_vec(&letter.to_document_within(0, 1000)).unwrap();
        assert!(smaller.len() < 3000, "{} bytes", smaller.len());
    }

    #[test]
    fn a_refused_time_is_not_the_dead_letter_s() {
        let source = br#"{"@id":"1","@timestamp":"not a time","eventTime":"not a time"}"#;
        let why = Why {
            reason: "refused",
            message: "mapper_parsing_exception".into(),
            status: Some(400),
            error_type: Some("mapper_parsing_exception".into()),
        };
        let letter = DeadLetter::document(origin(), None, source, None, why);
        assert_eq!(
            letter.to_document(0)["@timestamp"],
            "1970-01-01T00:00:00.000Z"
        );
    }

    /// A refused document whose known fields do not read as text keeps the
    /// key it was sent under: two of one record must not share one dead
    /// letter (the second would be a 409, taken for stored).
    #[test]
    fn a_document_whose_fields_do_not_read_keeps_its_key() {
        let odd = br#"{"@id":"7","@log_stream":5,"@message":{"a":1}}"#;
        let why = || Why {
            reason: "refused",
            message: "mapper_parsing_exception".into(),
            status: Some(400),
            error_type: Some("mapper_parsing_exception".into()),
        };
        let sent = DeadLetter::document(origin(), Some("7"), odd, None, why());
        assert_eq!(sent.to_document(0)["@id"], "7");
        let unread = DeadLetter::document(origin(), None, odd, None, why());
        assert_eq!(
            unread.to_document(0)["@id"],
            "deadletter-shardId-000000000007-49590338271490256608559692538361571095921575989136588898"
        );
    }
}
