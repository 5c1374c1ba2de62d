//! `json`: a message that is a JSON object becomes fields, nesting and types kept.
//! Strict: text that merely holds braces, a JSON array, or broken JSON stays text.
//! The message is the `message` body a previous transform split off (`lambda`),
//! else `@message`.

use super::{merge, parsed};

use crate::worker::document::{Document, MESSAGE};

/// The field a transform puts a message body in for `json` to parse.
pub const BODY: &str = "message";

/// Parses the body into fields, if it is a JSON object.
pub fn apply(mut doc: Document<'_>) -> Document<'_> {
    // A body a transform split off replaces the message, whatever it holds.
    // A body that is a view into the payload gives fields that are views too.
    let fields = parsed(doc.get(BODY).or_else(|| doc.get(MESSAGE)), object);
    if let Some(fields) = fields {
        merge(&mut doc, fields);
    }
    doc
}

/// The fields of `text` when it is a JSON object, trimmed of any Unicode
/// whitespace (which serde_json would refuse around it).
fn object(text: &str) -> Option<Document<'_>> {
    let text = text.trim();
    if !(text.starts_with('{') && text.ends_with('}')) {
        return None;
    }
    Document::parse_object(text)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use serde_json::Value;

    fn run(message: &str) -> Value {
        let doc = json!({"@id": "1", "@message": message});
        Value::from(apply(Document::from(doc.as_object().unwrap().clone())))
    }

    #[test]
    fn objects_become_fields_and_text_stays_text() {
        let cases = [
            (
                r#"{"level":"error","latency":12.5,"ok":false,"user":{"id":7,"tags":["a"]}}"#,
                json!({"@id": "1", "level": "error", "latency": 12.5, "ok": false, "user": {"id": 7, "tags": ["a"]}}),
            ),
            ("  {\"a\":1}\n", json!({"@id": "1", "a": 1})),
            ("\u{a0}{\"a\":1}\u{b}", json!({"@id": "1", "a": 1})),
            ("{\"a\":1}\u{2028}", json!({"@id": "1", "a": 1})),
            ("plain text", json!({"@id": "1"})),
            ("has {braces} inside", json!({"@id": "1"})),
            ("[1,2,3]", json!({"@id": "1"})),
            ("{broken", json!({"@id": "1"})),
            ("{\"a\":1} trailing", json!({"@id": "1"})),
            ("{}", json!({"@id": "1"})),
            (r#"{"@id":"spoof","x":1}"#, json!({"@id": "1", "x": 1})),
        ];
        for (message, want) in cases {
            let mut got = run(message);
            got.as_object_mut().unwrap().remove("@message");
            assert_eq!(got, want, "{message}");
        }
    }

    #[test]
    fn a_split_off_body_is_parsed_instead_of_the_message() {
        let doc = json!({"@message": "INFO\t{\"a\":1}", "message": "{\"a\":1}"});
        let out = apply(Document::from(doc.as_object().unwrap().clone()));
        assert_eq!(out["a"], 1);
    }
}
