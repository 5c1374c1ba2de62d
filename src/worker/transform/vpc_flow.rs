//! `vpcFlowLog`: a flow log record becomes fields, for the default version 2
//! format or any custom field list. Field names take `_` for `-` (`srcaddr`,
//! `account_id`, `pkt_srcaddr`); counts and ports are numbers, `start` and `end`
//! timestamps, and `-` (no value) leaves the field out. A line that does not have
//! the format's field count is left as it is.

use std::sync::LazyLock;

use std::borrow::Cow;

use crate::api::VPC_FLOW_LOG_FIELDS;
use crate::worker::document::{Document, Field, Key, MESSAGE, part_of};

/// The document key of every known field (`-` becomes `_`), made once per
/// process and kept for its life, so that parsing a record allocates no keys.
static KEYS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    VPC_FLOW_LOG_FIELDS
        .iter()
        .map(|f| &*Box::leak(f.replace('-', "_").into_boxed_str()))
        .collect()
});

const NUMBERS: &[&str] = &[
    "version",
    "srcport",
    "dstport",
    "protocol",
    "packets",
    "bytes",
    "tcp-flags",
    "traffic-path",
];
const TIMES: &[&str] = &["start", "end"];

/// A flow log format, resolved once.
#[derive(Clone, Debug, PartialEq)]
pub struct Format {
    columns: Vec<Column>,
    /// Whether no field is listed twice.
    unique: bool,
}

#[derive(Clone, Debug, PartialEq)]
struct Column {
    key: Key,
    kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Text,
    Number,
    Time,
}

impl Format {
    /// The format of these field names, as the flow log's `LogFormat` lists them.
    pub fn new(fields: &[&str]) -> Format {
        let columns = fields
            .iter()
            .map(|name| Column {
                key: match VPC_FLOW_LOG_FIELDS.iter().position(|f| f == name) {
                    Some(i) => Key::Borrowed(KEYS[i]),
                    None => Key::Owned(name.replace('-', "_")),
                },
                kind: if NUMBERS.contains(name) {
                    Kind::Number
                } else if TIMES.contains(name) {
                    Kind::Time
                } else {
                    Kind::Text
                },
            })
            .collect::<Vec<_>>();
        let unique = columns
            .iter()
            .enumerate()
            .all(|(i, c)| !columns[..i].iter().any(|d| d.key == c.key));
        Format { columns, unique }
    }
}

/// Parses `@message` as a flow log record of `format`.
pub fn apply<'a>(format: &Format, mut doc: Document<'a>) -> Document<'a> {
    // Taken out while the fields go in (views into it, when it is one into the
    // payload), and put back where it was.
    let message = match doc.get_mut(MESSAGE) {
        Some(Field::Text(message)) => std::mem::take(message),
        _ => return doc,
    };
    if let Some(values) = values(&message, format.columns.len()) {
        // A document as an event made it has only `@` fields, which no flow
        // log field is: the fields go in without looking for each first.
        let fresh = format.unique && doc.iter().all(|(k, _)| k.starts_with('@'));
        for (column, v) in format.columns.iter().zip(values) {
            if v != "-" {
                let value = typed(column.kind, part_of(&message, v));
                if fresh {
                    doc.push(column.key.clone(), value);
                } else {
                    doc.insert(column.key.clone(), value);
                }
            }
        }
    }
    doc.insert(MESSAGE, message);
    doc
}

/// Columns a format can have: no more than the flow log fields there are
/// (the `fields` list is checked to hold each known field once).
const MAX_COLUMNS: usize = 64;

/// The `n` values of a flow log line, in one pass over it; None when it does
/// not have `n`.
fn values(line: &str, n: usize) -> Option<impl Iterator<Item = &str>> {
    let mut values = [""; MAX_COLUMNS];
    let mut found = 0;
    for v in line.split_ascii_whitespace() {
        *values.get_mut(found)? = v;
        found += 1;
    }
    (found == n).then(|| values.into_iter().take(n))
}

fn typed(kind: Kind, text: Cow<'_, str>) -> Field<'_> {
    let parsed = match kind {
        Kind::Number => text.parse::<u64>().ok().map(|n| Field::Number(n.into())),
        Kind::Time => text
            .parse::<i64>()
            .ok()
            .and_then(|secs| secs.checked_mul(1000))
            .map(Field::Time),
        Kind::Text => None,
    };
    parsed.unwrap_or(Field::Text(text))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::api::VPC_FLOW_LOG_DEFAULT_FIELDS;

    fn run(fields: &[&str], message: &str) -> Value {
        let doc = json!({"@id": "1", "@message": message});
        let mut out = apply(
            &Format::new(fields),
            Document::from(doc.as_object().unwrap().clone()),
        );
        out.remove("@message");
        Value::from(out)
    }

    /// The records of the AWS VPC Flow Logs documentation ("Flow log record examples").
    #[test]
    fn default_format_examples() {
        let cases = [
            (
                "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK",
                json!({"@id": "1", "version": 2, "account_id": "123456789010", "interface_id": "eni-1235b8ca123456789",
                    "srcaddr": "172.31.16.139", "dstaddr": "172.31.16.21", "srcport": 20641, "dstport": 22, "protocol": 6,
                    "packets": 20, "bytes": 4249, "start": "2014-12-14T04:06:50.000Z", "end": "2014-12-14T04:07:50.000Z",
                    "action": "ACCEPT", "log_status": "OK"}),
            ),
            (
                "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK",
                json!({"@id": "1", "version": 2, "account_id": "123456789010", "interface_id": "eni-1235b8ca123456789",
                    "srcaddr": "172.31.9.69", "dstaddr": "172.31.9.12", "srcport": 49761, "dstport": 3389, "protocol": 6,
                    "packets": 20, "bytes": 4249, "start": "2014-12-14T04:06:50.000Z", "end": "2014-12-14T04:07:50.000Z",
                    "action": "REJECT", "log_status": "OK"}),
            ),
            (
                "2 123456789010 eni-1a2b3c4d - - - - - - - 1431280876 1431280934 - NODATA",
                json!({"@id": "1", "version": 2, "account_id": "123456789010", "interface_id": "eni-1a2b3c4d",
                    "start": "2015-05-10T18:01:16.000Z", "end": "2015-05-10T18:02:14.000Z", "log_status": "NODATA"}),
            ),
            ("not a flow log line", json!({"@id": "1"})),
            (
                "2 123456789010 eni-1 1.1.1.1 2.2.2.2 1 2 6 1 1 1 2 ACCEPT OK extra",
                json!({"@id": "1"}),
            ),
        ];
        for (message, want) in cases {
            assert_eq!(run(VPC_FLOW_LOG_DEFAULT_FIELDS, message), want, "{message}");
        }
    }

    #[test]
    fn a_field_already_there_is_replaced_in_place() {
        let doc = json!({"@id": "1", "srcaddr": "from a filter pattern", "@message":
            "2 123456789010 eni-1 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK"});
        let out = apply(
            &Format::new(VPC_FLOW_LOG_DEFAULT_FIELDS),
            Document::from(doc.as_object().unwrap().clone()),
        );
        assert_eq!(out.iter().filter(|(k, _)| *k == "srcaddr").count(), 1);
        assert_eq!(
            out.iter().nth(1).map(|(k, v)| (k, v.clone())),
            Some(("srcaddr", Field::from("172.31.16.139")))
        );
        let mut wire = Vec::new();
        out.write_json(&mut wire);
        let back: Value = serde_json::from_slice(&wire).unwrap();
        assert_eq!(back["start"], "2014-12-14T04:06:50.000Z");
        assert_eq!(back["bytes"], 4249);
    }

    #[test]
    fn a_line_of_more_values_than_any_format_is_left_as_it_is() {
        let line = vec!["1"; MAX_COLUMNS + 1].join(" ");
        let fields = vec!["version"; MAX_COLUMNS + 1];
        assert_eq!(run(&fields, &line), json!({"@id": "1"}));
        assert!(values(&line, MAX_COLUMNS).is_none());
    }

    #[test]
    fn custom_format_version_3() {
        let fields = "version vpc-id subnet-id instance-id interface-id account-id type srcaddr dstaddr srcport dstport \
                      pkt-srcaddr pkt-dstaddr protocol bytes packets start end action tcp-flags log-status";
        let fields: Vec<&str> = fields.split_whitespace().collect();
        let message = "3 vpc-12345678 subnet-012345678 i-1234567890abcdef0 eni-1235b8ca123456789 123456789012 IPv4 \
                       52.213.180.42 10.0.0.62 43416 5001 52.213.180.42 10.0.0.62 6 568 8 1566848875 1566848933 ACCEPT 2 OK";
        let out = run(&fields, message);
        assert_eq!(out["vpc_id"], "vpc-12345678");
        assert_eq!(out["type"], "IPv4");
        assert_eq!(out["pkt_srcaddr"], "52.213.180.42");
        assert_eq!(out["tcp_flags"], 2);
        assert_eq!(out["bytes"], 568);
        assert_eq!(out["start"], "2019-08-26T19:47:55.000Z");
    }

    #[test]
    fn custom_format_version_5() {
        let fields: Vec<&str> = "version srcaddr dstaddr srcport dstport protocol start end type packets bytes account-id \
             vpc-id subnet-id instance-id interface-id region az-id sublocation-type sublocation-id action tcp-flags \
             pkt-srcaddr pkt-dstaddr pkt-src-aws-service pkt-dst-aws-service traffic-path flow-direction log-status"
            .split_whitespace()
            .collect();
        let message = "5 52.95.128.179 10.0.0.71 80 34210 6 1616729292 1616729349 IPv4 14 15044 123456789012 \
             vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-0c50d5961bcb2d47b eni-1235b8ca123456789 ap-southeast-2 \
             apse2-az3 - - ACCEPT 19 52.95.128.179 10.0.0.71 S3 - - ingress OK";
        let out = run(&fields, message);
        assert_eq!(out["region"], "ap-southeast-2");
        assert_eq!(out["pkt_src_aws_service"], "S3");
        assert_eq!(out["flow_direction"], "ingress");
        assert!(out.get("sublocation_type").is_none() && out.get("traffic_path").is_none());
        assert_eq!(out["tcp_flags"], 19);
    }
}
