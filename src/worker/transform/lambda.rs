//! `lambda`: Lambda's platform lines (`START`, `END`, `REPORT` with durations,
//! memory and init duration, `INIT_START`) become a `lambda` object; the runtimes'
//! tab-separated lines (`timestamp requestId LEVEL body`, Node.js; `[LEVEL]
//! timestamp requestId body`, Python) give `lambda.request_id`, `level` and the
//! body as `message`, which `json` parses when it is JSON.

use std::borrow::Cow;

use super::json::BODY;
use crate::worker::document::{Document, Field, MESSAGE, part_of};

/// The object this transform fills.
pub const LAMBDA: &str = "lambda";

/// Parses `@message` as a Lambda log line. What it finds are views into the
/// message where the message is one into the payload.
pub fn apply(mut doc: Document<'_>) -> Document<'_> {
    let message = match doc.get(MESSAGE) {
        Some(Field::Text(message)) => message.clone(),
        _ => return doc,
    };
    let parsed = platform_line(&message)
        .map(|lambda| (lambda, None))
        .or_else(|| runtime_line(&message));
    if let Some((lambda, body)) = parsed {
        if let Some((level, body)) = body {
            doc.insert_absent("level", level);
            doc.insert_absent(BODY, body);
        }
        doc.insert(LAMBDA, Field::Object(Box::new(lambda)));
    }
    doc
}

fn platform_line<'a>(message: &Cow<'a, str>) -> Option<Document<'a>> {
    let (kind, rest) = message.split_once(' ')?;
    let kind = match kind {
        "START" => "START",
        "END" => "END",
        "REPORT" => "REPORT",
        "INIT_START" => "INIT_START",
        _ => return None,
    };
    let mut lambda = Document::with_capacity(12);
    lambda.insert("type", kind);
    for part in rest
        .split(['\t', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        // START puts two pairs on one line: "RequestId: x Version: $LATEST".
        let (first, version) = match part.split_once(" Version: ") {
            Some((first, version)) if kind == "START" => (first, Some(version)),
            _ => (part, None),
        };
        let (key, value) = first.split_once(": ")?;
        let (name, value) = field(message, key, value.trim())?;
        lambda.insert(name, value);
        if let Some(version) = version {
            lambda.insert("version", part_of(message, version.trim()));
        }
    }
    if lambda.contains_key("init_duration_ms") || kind == "REPORT" {
        let cold = lambda.contains_key("init_duration_ms");
        lambda.insert("cold_start", Field::Bool(cold));
    }
    Some(lambda)
}

fn field<'a>(message: &Cow<'a, str>, key: &str, value: &str) -> Option<(&'static str, Field<'a>)> {
    // A number JSON cannot hold (`NaN`, `1e400`) is null, and the line's
    // other fields stay.
    let number = |v: &str| {
        let n = v.split_whitespace().next()?;
        if let Ok(n) = n.parse::<u64>() {
            return Some(Field::Number(n.into()));
        }
        let n = n.parse::<f64>().ok()?;
        Some(serde_json::Number::from_f64(n).map_or(Field::Null, Field::Number))
    };
    let text = || Field::Text(part_of(message, value));
    Some(match key {
        "RequestId" => ("request_id", text()),
        "Version" => ("version", text()),
        "Duration" => ("duration_ms", number(value)?),
        "Billed Duration" => ("billed_duration_ms", number(value)?),
        "Memory Size" => ("memory_size_mb", number(value)?),
        "Max Memory Used" => ("max_memory_used_mb", number(value)?),
        "Init Duration" => ("init_duration_ms", number(value)?),
        "Restore Duration" => ("restore_duration_ms", number(value)?),
        "XRAY TraceId" => ("xray_trace_id", text()),
        "SegmentId" => ("xray_segment_id", text()),
        "Sampled" => ("xray_sampled", Field::Bool(value == "true")),
        "Runtime Version" => ("runtime_version", text()),
        "Runtime Version ARN" => ("runtime_version_arn", text()),
        _ => ("unknown", Field::from(format!("{key}: {value}"))),
    })
}

type Runtime<'a> = (Document<'a>, Option<(Cow<'a, str>, Cow<'a, str>)>);

fn runtime_line<'a>(message: &Cow<'a, str>) -> Option<Runtime<'a>> {
    let mut parts = message.splitn(4, '\t');
    let (a, b, c, body) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let (request_id, level) = if is_timestamp(a) {
        (b, c) // Node.js: timestamp, request id, level
    } else if a.starts_with('[') && a.ends_with(']') && is_timestamp(b) {
        (c, &a[1..a.len() - 1]) // Python: [LEVEL], timestamp, request id
    } else {
        return None;
    };
    let mut lambda = Document::with_capacity(1);
    lambda.insert("request_id", part_of(message, request_id));
    let found = (part_of(message, level), part_of(message, body.trim_end()));
    Some((lambda, Some(found)))
}

fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && s.ends_with('Z')
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn run(message: &str) -> Value {
        let doc = json!({"@id": "1", "@message": message});
        let mut out = apply(Document::from(doc.as_object().unwrap().clone()));
        out.remove("@message");
        out.remove("@id");
        Value::from(out)
    }

    /// Lines as the AWS Lambda documentation shows them.
    #[test]
    fn platform_lines() {
        let cases = [
            (
                "START RequestId: 6bc28136-xmpl-4365-b021-0ce6b2e64ab0 Version: $LATEST",
                json!({"lambda": {"type": "START", "request_id": "6bc28136-xmpl-4365-b021-0ce6b2e64ab0", "version": "$LATEST"}}),
            ),
            (
                "END RequestId: 6bc28136-xmpl-4365-b021-0ce6b2e64ab0",
                json!({"lambda": {"type": "END", "request_id": "6bc28136-xmpl-4365-b021-0ce6b2e64ab0"}}),
            ),
            (
                "REPORT RequestId: 6bc28136-xmpl-4365-b021-0ce6b2e64ab0\tDuration: 24.26 ms\tBilled Duration: 25 ms\tMemory Size: 128 MB\tMax Memory Used: 79 MB\tInit Duration: 191.17 ms\t",
                json!({"lambda": {"type": "REPORT", "request_id": "6bc28136-xmpl-4365-b021-0ce6b2e64ab0",
                    "duration_ms": 24.26, "billed_duration_ms": 25, "memory_size_mb": 128, "max_memory_used_mb": 79,
                    "init_duration_ms": 191.17, "cold_start": true}}),
            ),
            (
                "REPORT RequestId: 3604209a-e9a3-11e6-939a-754dd98c7be3\tDuration: 12.34 ms\tBilled Duration: 100 ms \tMemory Size: 128 MB\tMax Memory Used: 18 MB\t\nXRAY TraceId: 1-5e34a614-10bdxmplf1fb44f07bc535a1\tSegmentId: 07f5xmpl2d1f6f85\tSampled: true",
                json!({"lambda": {"type": "REPORT", "request_id": "3604209a-e9a3-11e6-939a-754dd98c7be3",
                    "duration_ms": 12.34, "billed_duration_ms": 100, "memory_size_mb": 128, "max_memory_used_mb": 18,
                    "cold_start": false, "xray_trace_id": "1-5e34a614-10bdxmplf1fb44f07bc535a1",
                    "xray_segment_id": "07f5xmpl2d1f6f85", "xray_sampled": true}}),
            ),
        ];
        for (message, want) in cases {
            assert_eq!(run(message), want, "{message}");
        }
    }

    #[test]
    fn runtime_lines() {
        let node = "2019-06-07T19:11:20.562Z\tc793869b-ee49-115b-a5b6-4fd21e8dedac\tINFO\tENVIRONMENT VARIABLES\r\n";
        assert_eq!(
            run(node),
            json!({"lambda": {"request_id": "c793869b-ee49-115b-a5b6-4fd21e8dedac"}, "level": "INFO", "message": "ENVIRONMENT VARIABLES"})
        );
        let python = "[ERROR]\t2023-08-31T22:51:07.012Z\t9c3b4f4e-0d1a-4b67-9b1e-0a4f6a1d2c3e\t{\"error\":\"boom\"}";
        assert_eq!(
            run(python),
            json!({"lambda": {"request_id": "9c3b4f4e-0d1a-4b67-9b1e-0a4f6a1d2c3e"}, "level": "ERROR", "message": "{\"error\":\"boom\"}"})
        );
    }

    #[test]
    fn a_number_json_cannot_hold_is_null_and_the_rest_stays() {
        for duration in ["NaN", "1e400", "inf"] {
            let line =
                format!("REPORT RequestId: a1\tDuration: {duration} ms\tMemory Size: 128 MB");
            assert_eq!(
                run(&line),
                json!({"lambda": {"type": "REPORT", "request_id": "a1", "duration_ms": null,
                    "memory_size_mb": 128, "cold_start": false}}),
                "{line}"
            );
        }
    }

    /// What a line gives is views into it, and its wire form is the JSON its
    /// fields make.
    #[test]
    fn fields_borrow_the_line() {
        let line = "REPORT RequestId: 3604209a\tDuration: 12.34 ms\tBilled Duration: 100 ms";
        let mut doc = Document::new();
        doc.insert(MESSAGE, line);
        let out = apply(doc);
        let Some(Field::Object(lambda)) = out.get(LAMBDA) else {
            panic!("no lambda object: {out:?}");
        };
        assert!(matches!(
            lambda.get("request_id"),
            Some(Field::Text(Cow::Borrowed("3604209a")))
        ));
        let mut wire = Vec::new();
        out.write_json(&mut wire);
        assert_eq!(
            serde_json::from_slice::<Value>(&wire).unwrap(),
            Value::from(out)
        );

        let node = "2019-06-07T19:11:20.562Z\tc793869b\tINFO\tbody text\r\n";
        let mut doc = Document::new();
        doc.insert(MESSAGE, node);
        let out = apply(doc);
        assert!(matches!(
            out.get("message"),
            Some(Field::Text(Cow::Borrowed("body text")))
        ));
        assert!(matches!(
            out.get("level"),
            Some(Field::Text(Cow::Borrowed("INFO")))
        ));
    }

    #[test]
    fn other_lines_are_left_alone() {
        for message in [
            "hello world",
            "STARTING up",
            "a\tb\tc",
            "REPORTS are due",
            "",
        ] {
            assert_eq!(run(message), json!({}), "{message:?}");
        }
    }
}
