//! CloudWatch Logs subscription records: a gzip'd JSON envelope holding log events.
//!
//! Pure: bytes in, [`Decoded`] out. Inflation is capped, so a record that expands
//! past the limit (a gzip bomb) is rejected without growing memory past it.

use std::io::Read;

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// Decoding limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest inflated payload accepted. A Kinesis record is at most 1 MiB
    /// compressed; CloudWatch payloads compress about 10:1.
    pub max_inflated_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_inflated_bytes: 16 << 20,
        }
    }
}

/// What a record holds.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// CloudWatch Logs checking the destination when a filter is created; no events.
    Control,
    /// Log events of one log stream.
    Data(LogData),
}

/// The `DATA_MESSAGE` envelope.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogData {
    /// The AWS account that owns the log group.
    pub owner: String,
    /// Log group name.
    pub log_group: String,
    /// Log stream name.
    pub log_stream: String,
    /// The subscription filters that matched.
    #[serde(default)]
    pub subscription_filters: Vec<String>,
    /// The events, oldest first.
    pub log_events: Vec<LogEvent>,
}

/// One log event.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEvent {
    /// The event id: a 56-digit decimal string (accepted as a number too).
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    /// Event time, Unix milliseconds (accepted as a string of digits too).
    #[serde(deserialize_with = "millis")]
    pub timestamp: i64,
    /// The log line.
    pub message: String,
    /// Named fields of a space-delimited filter pattern, name → text.
    #[serde(default)]
    pub extracted_fields: Option<Map<String, Value>>,
}

/// Why a record could not be decoded. Every variant is permanent for the record:
/// it is dead-lettered and the shard goes on.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The record does not start with the gzip magic bytes.
    #[error("not gzip data (CloudWatch Logs records are gzip-compressed)")]
    NotGzip,
    /// The gzip stream is corrupt or truncated.
    #[error("corrupt gzip data: {0}")]
    Inflate(std::io::Error),
    /// The payload inflates past the limit.
    #[error("payload inflates past {limit} bytes")]
    TooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// The inflated payload is not the CloudWatch Logs envelope.
    #[error("not a CloudWatch Logs payload: {0}")]
    Envelope(serde_json::Error),
    /// A `messageType` this decoder does not know.
    #[error("unknown messageType {0:?}")]
    UnknownMessageType(String),
}

impl DecodeError {
    /// A stable label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            DecodeError::NotGzip => "not_gzip",
            DecodeError::Inflate(_) => "corrupt_gzip",
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::Envelope(_) => "bad_envelope",
            DecodeError::UnknownMessageType(_) => "unknown_message_type",
        }
    }
}

/// Decodes one Kinesis record's data.
pub fn decode(data: &[u8], limits: Limits) -> Result<Decoded, DecodeError> {
    let json = inflate(data, limits.max_inflated_bytes)?;
    // One pass: `messageType` comes after `logEvents` (keys are sorted), so
    // reading it first would scan the whole payload twice.
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Envelope {
        message_type: String,
        owner: Option<String>,
        log_group: Option<String>,
        log_stream: Option<String>,
        #[serde(default)]
        subscription_filters: Vec<String>,
        log_events: Option<Vec<LogEvent>>,
    }
    match serde_json::from_slice::<Envelope>(&json) {
        Ok(e) => match (
            e.message_type.as_str(),
            e.owner,
            e.log_group,
            e.log_stream,
            e.log_events,
        ) {
            ("DATA_MESSAGE", Some(owner), Some(log_group), Some(log_stream), Some(log_events)) => {
                Ok(Decoded::Data(LogData {
                    owner,
                    log_group,
                    log_stream,
                    subscription_filters: e.subscription_filters,
                    log_events,
                }))
            }
            ("CONTROL_MESSAGE", ..) => Ok(Decoded::Control),
            ("DATA_MESSAGE", ..) => Err(DecodeError::Envelope(serde::de::Error::custom(
                "a DATA_MESSAGE needs owner, logGroup, logStream and logEvents",
            ))),
            (other, ..) => Err(DecodeError::UnknownMessageType(other.to_owned())),
        },
        Err(e) => {
            // Say what kind of message failed, when that much can be read.
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Kind<'a> {
                #[serde(borrow)]
                message_type: std::borrow::Cow<'a, str>,
            }
            match serde_json::from_slice::<Kind>(&json) {
                Ok(kind) if kind.message_type == "CONTROL_MESSAGE" => Ok(Decoded::Control),
                Ok(kind) if kind.message_type != "DATA_MESSAGE" => Err(
                    DecodeError::UnknownMessageType(kind.message_type.into_owned()),
                ),
                _ => Err(DecodeError::Envelope(e)),
            }
        }
    }
}

/// Gunzips `data` (all members), failing once the output passes `limit`.
fn inflate(data: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    if !data.starts_with(&[0x1f, 0x8b]) {
        return Err(DecodeError::NotGzip);
    }
    // The gzip trailer holds the inflated size (of the last member, modulo
    // 2^32): a hint that spares the buffer its regrowth, never trusted past the cap.
    let trailer = data.len().checked_sub(4).map(|at| &data[at..]);
    let hint = trailer
        .and_then(|t| <[u8; 4]>::try_from(t).ok())
        .map_or(data.len() * 8, |t| u32::from_le_bytes(t) as usize);
    let mut out = Vec::with_capacity(hint.min(limit) + 1);
    let mut reader = flate2::read::MultiGzDecoder::new(data).take(limit as u64 + 1);
    reader.read_to_end(&mut out).map_err(DecodeError::Inflate)?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(out)
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct Id;
    impl Visitor<'_> for Id {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an event id, a string or a number")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(Id)
}

fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct Millis;
    impl Visitor<'_> for Millis {
        type Value = i64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("Unix milliseconds, a whole number or a string of digits")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom(format!("timestamp {v} is out of range")))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
            Err(E::custom(format!(
                "timestamp {v} is not whole milliseconds"
            )))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
            if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                v.parse().map_err(E::custom)
            } else {
                Err(E::custom(format!(
                    "timestamp must be Unix milliseconds, not {v:?}"
                )))
            }
        }
    }
    d.deserialize_any(Millis)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;

    pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// Verbatim what CloudWatch Logs delivers (as recorded from the stack's corrected moto).
    const GOLDEN: &str = r#"{"logEvents":[{"id":"00000001795635868711000000000000000000000000000000000001","timestamp":1795635868711,"message":"ERROR disk full"}],"logGroup":"/t1/1795635868057","logStream":"app-1","messageType":"DATA_MESSAGE","owner":"123456789012","subscriptionFilters":["errors"]}"#;

    #[test]
    fn golden_data_message() {
        let Decoded::Data(data) = decode(&gzip(GOLDEN.as_bytes()), Limits::default()).unwrap()
        else {
            panic!("data");
        };
        assert_eq!(data.owner, "123456789012");
        assert_eq!(data.log_group, "/t1/1795635868057");
        assert_eq!(data.log_stream, "app-1");
        assert_eq!(data.subscription_filters, ["errors"]);
        assert_eq!(
            data.log_events,
            [LogEvent {
                id: "00000001795635868711000000000000000000000000000000000001".into(),
                timestamp: 1_795_635_868_711,
                message: "ERROR disk full".into(),
                extracted_fields: None,
            }]
        );
    }

    #[test]
    fn control_message_is_recognised() {
        let control = r#"{"messageType":"CONTROL_MESSAGE","owner":"CloudwatchLogs","logGroup":"","logStream":"","subscriptionFilters":[],"logEvents":[{"id":"","timestamp":1432826855000,"message":"CWL CONTROL MESSAGE: Checking health of destination Kinesis stream."}]}"#;
        assert_eq!(
            decode(&gzip(control.as_bytes()), Limits::default()).unwrap(),
            Decoded::Control
        );
    }

    #[test]
    fn tolerant_of_unknown_fields_number_ids_and_string_timestamps() {
        let payload = r#"{"messageType":"DATA_MESSAGE","owner":"1","logGroup":"g","logStream":"s","policyLevel":"ACCOUNT_LEVEL_POLICY","subscriptionFilters":["f"],
            "logEvents":[{"id":42,"timestamp":"1795635868711","message":"m","extractedFields":{"ip":"10.0.0.1"},"future":true}]}"#;
        let Decoded::Data(data) = decode(&gzip(payload.as_bytes()), Limits::default()).unwrap()
        else {
            panic!("data");
        };
        let event = &data.log_events[0];
        assert_eq!(event.id, "42");
        assert_eq!(event.timestamp, 1_795_635_868_711);
        assert_eq!(event.extracted_fields.as_ref().unwrap()["ip"], "10.0.0.1");
    }

    #[test]
    fn bad_records_are_errors_with_categories() {
        let limits = Limits::default();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (GOLDEN.as_bytes().to_vec(), "not_gzip"),
            (gzip(GOLDEN.as_bytes())[..20].to_vec(), "corrupt_gzip"),
            (gzip(b"not json"), "bad_envelope"),
            (gzip(br#"{"messageType":"DATA_MESSAGE"}"#), "bad_envelope"),
            (gzip(br#"{"messageType":"PING"}"#), "unknown_message_type"),
            (
                gzip(GOLDEN.replace("1795635868711,", "\"soon\",").as_bytes()),
                "bad_envelope",
            ),
            (
                gzip(GOLDEN.replace("1795635868711,", "1.5,").as_bytes()),
                "bad_envelope",
            ),
        ];
        for (record, want) in cases {
            let err = decode(&record, limits).unwrap_err();
            assert_eq!(err.category(), want, "{err}");
        }
    }

    #[test]
    fn a_gzip_bomb_is_rejected_at_the_cap() {
        let bomb = gzip(&vec![b' '; 16 << 20]);
        assert!(
            bomb.len() < 64 << 10,
            "16 MiB of spaces compresses to {} bytes",
            bomb.len()
        );
        let err = decode(
            &bomb,
            Limits {
                max_inflated_bytes: 1 << 20,
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, DecodeError::TooLarge { limit } if limit == 1 << 20),
            "{err}"
        );
    }

    #[test]
    fn concatenated_gzip_members_are_read_whole() {
        let (a, b) = GOLDEN.split_at(40);
        let mut two = gzip(a.as_bytes());
        two.extend(gzip(b.as_bytes()));
        assert!(matches!(
            decode(&two, Limits::default()),
            Ok(Decoded::Data(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode(&bytes, Limits { max_inflated_bytes: 1 << 16 });
            let mut gz = vec![0x1f, 0x8b];
            gz.extend(&bytes);
            let _ = decode(&gz, Limits { max_inflated_bytes: 1 << 16 });
            let _ = decode(&gzip(&bytes), Limits { max_inflated_bytes: 1 << 16 });
        }
    }
}
