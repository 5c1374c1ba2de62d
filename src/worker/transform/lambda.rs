//! `lambda`: Lambda's platform lines (`START`, `END`, `REPORT` with durations,
//! memory and init duration, `INIT_START`) become a `lambda` object; the runtimes'
//! tab-separated lines (`timestamp requestId LEVEL body`, Node.js; `[LEVEL]
//! timestamp requestId body`, Python) give `lambda.request_id`, `level` and the
//! body as `message`, which `json` parses when it is JSON.

use serde_json::{Map, Value};

use super::json::BODY;
use crate::worker::document::{Document, MESSAGE};

/// The object this transform fills.
pub const LAMBDA: &str = "lambda";

/// Parses `@message` as a Lambda log line.
pub fn apply(mut doc: Document<'_>) -> Document<'_> {
    let Some(message) = doc.text(MESSAGE) else {
        return doc;
    };
    let parsed = platform_line(message)
        .map(|lambda| (lambda, None))
        .or_else(|| runtime_line(message));
    if let Some((lambda, body)) = parsed {
        if let Some((level, body)) = body {
            doc.insert_absent("level", level);
            doc.insert_absent(BODY, body);
        }
        doc.insert(LAMBDA, Value::Object(lambda));
    }
    doc
}

fn platform_line(message: &str) -> Option<Map<String, Value>> {
    let (kind, rest) = message.split_once(' ')?;
    if !matches!(kind, "START" | "END" | "REPORT" | "INIT_START") {
        return None;
    }
    let mut lambda = Map::new();
    lambda.insert("type".into(), Value::from(kind));
    for part in rest
        .split(['\t', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        // START puts two pairs on one line: "RequestId: x Version: $LATEST".
        let pairs: Vec<&str> = if kind == "START" {
            part.split(" Version: ").collect()
        } else {
            vec![part]
        };
        for (i, pair) in pairs.iter().enumerate() {
            let (key, value) = if i == 1 {
                ("Version", *pair)
            } else {
                pair.split_once(": ")?
            };
            let (name, value) = field(key, value.trim())?;
            lambda.insert(name.into(), value);
        }
    }
    if lambda.contains_key("init_duration_ms") || kind == "REPORT" {
        let cold = lambda.contains_key("init_duration_ms");
        lambda.insert("cold_start".into(), Value::Bool(cold));
    }
    Some(lambda)
}

fn field(key: &str, value: &str) -> Option<(&'static str, Value)> {
    let number = |v: &str| {
        let n = v.split_whitespace().next()?;
        n.parse::<u64>()
            .map(Value::from)
            .ok()
            .or_else(|| n.parse::<f64>().ok().map(Value::from))
    };
    Some(match key {
        "RequestId" => ("request_id", Value::from(value)),
        "Version" => ("version", Value::from(value)),
        "Duration" => ("duration_ms", number(value)?),
        "Billed Duration" => ("billed_duration_ms", number(value)?),
        "Memory Size" => ("memory_size_mb", number(value)?),
        "Max Memory Used" => ("max_memory_used_mb", number(value)?),
        "Init Duration" => ("init_duration_ms", number(value)?),
        "Restore Duration" => ("restore_duration_ms", number(value)?),
        "XRAY TraceId" => ("xray_trace_id", Value::from(value)),
        "SegmentId" => ("xray_segment_id", Value::from(value)),
        "Sampled" => ("xray_sampled", Value::Bool(value == "true")),
        "Runtime Version" => ("runtime_version", Value::from(value)),
        "Runtime Version ARN" => ("runtime_version_arn", Value::from(value)),
        _ => ("unknown", Value::from(format!("{key}: {value}"))),
    })
}

type Runtime = (Map<String, Value>, Option<(String, String)>);

fn runtime_line(message: &str) -> Option<Runtime> {
    let parts: Vec<&str> = message.splitn(4, '\t').collect();
    let [a, b, c, body] = parts[..] else {
        return None;
    };
    let (request_id, level) = if is_timestamp(a) {
        (b, c) // Node.js: timestamp, request id, level
    } else if a.starts_with('[') && a.ends_with(']') && is_timestamp(b) {
        (c, &a[1..a.len() - 1]) // Python: [LEVEL], timestamp, request id
    } else {
        return None;
    };
    let mut lambda = Map::new();
    lambda.insert("request_id".into(), Value::from(request_id));
    Some((lambda, Some((level.to_owned(), body.trim_end().to_owned()))))
}

fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && s.ends_with('Z')
}

#[cfg(test)]
mod tests {
    use serde_json::json;

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
