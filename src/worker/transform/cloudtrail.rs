//! `cloudTrail`: a CloudTrail event, as CloudTrail writes one per log event to
//! CloudWatch Logs, becomes fields, and its `eventTime` the document time. A
//! message holding a `Records` array (the S3 delivery format) becomes one document
//! per record, with the id `<event id>-<index>` so a replay rewrites the same ones.

use serde_json::value::RawValue;

use super::{merge, parsed};
use crate::time::parse_rfc3339_millis;
use crate::worker::document::{Document, Field, ID, MESSAGE, TIMESTAMP};

/// Parses `@message` as a CloudTrail event or a `Records` batch, all at once.
#[cfg(test)]
fn apply(doc: Document<'_>) -> Vec<Document<'_>> {
    let mut out = Vec::new();
    each(doc, &mut |d| {
        out.push(d);
        true
    });
    out
}

/// Parses `@message` as a CloudTrail event or a `Records` batch, handing each
/// document to `out` as it is made, until `out` says to stop (returns false);
/// whether it went to the end. A batch of many records is never held whole
/// as documents.
pub fn each<'a>(mut doc: Document<'a>, out: &mut dyn FnMut(Document<'a>) -> bool) -> bool {
    let Some(mut event) = parsed(doc.get(MESSAGE), object) else {
        return out(doc);
    };
    // Only a batch of events is split; anything else in `Records` stays
    // one document, as it came.
    let raw = match event.remove("Records") {
        Some(Field::Raw(raw)) => raw,
        other => {
            if let Some(other) = other {
                event.insert("Records", other);
            }
            return out(with_event(doc, event));
        }
    };
    let Some(records) = batch(&raw) else {
        event.insert("Records", Field::Raw(raw));
        return out(with_event(doc, event));
    };
    let id = doc.text(ID).unwrap_or_default().to_owned();
    // Each record's document is made from the event's without its message:
    // copying the whole batch's text into each of its records would cost the
    // square of its size.
    doc.remove(MESSAGE);
    for (i, record) in records.into_iter().enumerate() {
        let mut one = doc.clone();
        one.insert(ID, format!("{id}-{i}"));
        one.insert(MESSAGE, record.to_owned());
        let one = match Document::parse_object(record) {
            Some(fields) => with_event(one, fields.into_owned()),
            None => one,
        };
        if !out(one) {
            return false;
        }
    }
    true
}

/// A message that is a JSON object.
fn object(text: &str) -> Option<Document<'_>> {
    text.trim_start()
        .starts_with('{')
        .then(|| Document::parse_object(text))?
}

/// The records of a `Records` batch: a non-empty array of objects, as their
/// JSON text.
fn batch(raw: &RawValue) -> Option<Vec<&str>> {
    let records: Vec<&RawValue> = serde_json::from_str(raw.get()).ok()?;
    let records: Vec<&str> = records.into_iter().map(RawValue::get).collect();
    (!records.is_empty() && records.iter().all(|r| r.starts_with('{'))).then_some(records)
}

fn with_event<'a>(mut doc: Document<'a>, event: Document<'a>) -> Document<'a> {
    // Anyone who writes to the log group writes this text: only a time
    // becomes the document's (in one form, which every index and object key
    // reads alike); anything else stays the event's own field.
    if let Some(millis) = event.text("eventTime").and_then(parse_rfc3339_millis) {
        doc.insert(TIMESTAMP, Field::Time(millis));
    }
    merge(&mut doc, event);
    doc
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// The StartLogging event of the AWS CloudTrail documentation.
    const START_LOGGING: &str = r#"{"eventVersion":"1.08","userIdentity":{"type":"IAMUser","principalId":"AIDAJDPLRKLG7UEXAMPLE","arn":"arn:aws:iam::123456789012:user/Mary_Major","accountId":"123456789012","accessKeyId":"AKIAIOSFODNN7EXAMPLE","userName":"Mary_Major"},"eventTime":"2019-06-19T00:18:31Z","eventSource":"cloudtrail.amazonaws.com","eventName":"StartLogging","awsRegion":"us-east-2","sourceIPAddress":"203.0.113.64","userAgent":"signin.amazonaws.com","requestParameters":{"name":"arn:aws:cloudtrail:us-east-2:123456789012:trail/My-First-Trail"},"responseElements":null,"requestID":"ddf5140f-EXAMPLE","eventID":"7116c6c1-EXAMPLE","readOnly":false,"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"123456789012","eventCategory":"Management"}"#;

    fn doc(message: &str) -> Document<'static> {
        Document::from(
            json!({"@id": "3195", "@timestamp": "2019-06-19T00:18:40.000Z", "@message": message})
                .as_object()
                .unwrap()
                .clone(),
        )
    }

    #[test]
    fn one_event_becomes_fields_at_its_event_time() {
        let [out] = <[Document; 1]>::try_from(apply(doc(START_LOGGING))).unwrap();
        assert_eq!(out["@id"], "3195");
        assert_eq!(out["@timestamp"], "2019-06-19T00:18:31.000Z");
        assert_eq!(out["eventName"], "StartLogging");
        assert_eq!(out["sourceIPAddress"], "203.0.113.64");
        assert_eq!(out["readOnly"], false);
        assert_eq!(out["responseElements"], Value::Null);
        // Nested objects are written as they came, and read back the same.
        let mut written = Vec::new();
        out.write_json(&mut written);
        let written: Value = serde_json::from_slice(&written).unwrap();
        assert_eq!(written["userIdentity"]["userName"], "Mary_Major");
        let event: Value = serde_json::from_str(START_LOGGING).unwrap();
        assert_eq!(written["userIdentity"], event["userIdentity"]);
        assert_eq!(written["requestParameters"], event["requestParameters"]);
    }

    #[test]
    fn records_become_one_document_each_with_deterministic_ids() {
        let batch = format!(
            r#"{{"Records":[{START_LOGGING},{{"eventName":"StopLogging","eventTime":"2019-06-19T00:19:00Z"}}]}}"#
        );
        let out = apply(doc(&batch));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["@id"], "3195-0");
        assert_eq!(out[1]["@id"], "3195-1");
        assert_eq!(out[1]["eventName"], "StopLogging");
        assert_eq!(out[1]["@timestamp"], "2019-06-19T00:19:00.000Z");
        assert!(out[1]["@message"].as_str().unwrap().contains("StopLogging"));
        assert!(out.iter().all(|d| d.get("Records").is_none()));
        assert_eq!(
            apply(doc(&batch)),
            out,
            "the same input gives the same documents"
        );
    }

    #[test]
    fn anything_else_is_left_alone() {
        for message in ["not json", "[1,2]", "{broken", r#"{"Records":[]}"#] {
            let out = apply(doc(message));
            assert_eq!(out.len(), 1, "{message}");
            assert_eq!(
                out[0]["@timestamp"], "2019-06-19T00:18:40.000Z",
                "{message}"
            );
        }
    }

    #[test]
    fn an_event_time_that_is_no_time_stays_the_event_s_own_field() {
        for time in [
            "not a time",
            "2019-02-30T00:00:00Z",
            "2019-06-19T00:18:31+02:00",
        ] {
            let out = apply(doc(&format!(
                r#"{{"eventTime":"{time}","eventName":"Evil"}}"#
            )));
            assert_eq!(out[0]["eventTime"], time);
            let want = if time.ends_with("+02:00") {
                "2019-06-18T22:18:31.000Z"
            } else {
                "2019-06-19T00:18:40.000Z"
            };
            assert_eq!(out[0]["@timestamp"], want, "{time}");
        }
    }
}
