//! CloudWatch Logs subscription records: a gzip'd JSON envelope holding log events.
//!
//! Pure: bytes in, [`Decoded`] out. Inflation is capped, so a record that expands
//! past the limit (a gzip bomb) is rejected without growing memory past it.
//! What the envelope holds is borrowed from the inflated payload wherever the
//! JSON needed no unescaping.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::io::Read;

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
pub enum Decoded<'a> {
    /// CloudWatch Logs checking the destination when a filter is created; no events.
    Control,
    /// Log events of one log stream.
    Data(LogData<'a>),
}

/// The `DATA_MESSAGE` envelope.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogData<'a> {
    /// The AWS account that owns the log group.
    #[serde(borrow)]
    pub owner: Cow<'a, str>,
    /// Log group name.
    #[serde(borrow)]
    pub log_group: Cow<'a, str>,
    /// Log stream name.
    #[serde(borrow)]
    pub log_stream: Cow<'a, str>,
    /// The subscription filters that matched.
    #[serde(default, borrow)]
    pub subscription_filters: Vec<Cow<'a, str>>,
    /// The events, oldest first.
    #[serde(borrow)]
    pub log_events: Vec<LogEvent<'a>>,
}

/// One log event.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEvent<'a> {
    /// The event id: a 56-digit decimal string (accepted as a number too).
    #[serde(borrow, deserialize_with = "string_or_number")]
    pub id: Cow<'a, str>,
    /// Event time, Unix milliseconds (accepted as a string of digits too).
    #[serde(deserialize_with = "millis")]
    pub timestamp: i64,
    /// The log line.
    #[serde(borrow)]
    pub message: Cow<'a, str>,
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

/// Decodes one Kinesis record's data, inflating it into `buffer` (cleared
/// first, so one buffer serves record after record), from which what it
/// returns borrows.
pub fn decode<'a>(
    data: &[u8],
    limits: Limits,
    buffer: &'a mut Vec<u8>,
) -> Result<Decoded<'a>, DecodeError> {
    inflate(data, limits.max_inflated_bytes, buffer)?;
    if buffer.len() > SIMD_MAX_INPUT {
        let json: &'a [u8] = buffer;
        return parse(json);
    }
    // simd-json unescapes text in place, so even text with escapes (every
    // JSON log line has some) is a view into the buffer. What it does not
    // take is read again by serde_json, whose errors say where and what; the
    // failed parse rewrote the buffer, so that reading inflates anew, and
    // what it makes of the record owns its text (a rare path).
    let parsed = SIMD_BUFFERS.with_borrow_mut(|buffers| {
        simd_json::serde::from_slice_with_buffers::<Envelope>(buffer, buffers)
    });
    match parsed {
        Ok(envelope) => envelope.decoded(),
        Err(_) => {
            let mut again = Vec::new();
            inflate(data, limits.max_inflated_bytes, &mut again)?;
            parse(&again).map(Decoded::into_owned)
        }
    }
}

/// The largest inflated payload simd-json reads; serde_json reads larger
/// ones. simd-json holds 28 bytes for each value and structural character
/// while it parses, and keeps its buffers sized for the largest input it
/// served: a record made of `[0,0,0,…]` would cost about 18 times its size,
/// where serde_json skips what it does not read without allocating.
const SIMD_MAX_INPUT: usize = 2 << 20;

thread_local! {
    /// simd-json's working buffers, reused record after record on each thread.
    static SIMD_BUFFERS: RefCell<simd_json::Buffers> = RefCell::new(simd_json::Buffers::default());
}

/// The envelope as it is read, in one pass: `messageType` comes after
/// `logEvents` (keys are sorted), so reading it first would scan the whole
/// payload twice.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    #[serde(borrow)]
    message_type: Cow<'a, str>,
    #[serde(borrow)]
    owner: Option<Text<'a>>,
    #[serde(borrow)]
    log_group: Option<Text<'a>>,
    #[serde(borrow)]
    log_stream: Option<Text<'a>>,
    #[serde(default, borrow)]
    subscription_filters: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    log_events: Option<Vec<LogEvent<'a>>>,
}

/// Text that borrows when it can: serde borrows a `Cow` only where it is the
/// field's whole type, not inside an `Option`.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'a> Envelope<'a> {
    fn decoded(self) -> Result<Decoded<'a>, DecodeError> {
        match (
            self.message_type.as_ref(),
            self.owner,
            self.log_group,
            self.log_stream,
            self.log_events,
        ) {
            (
                "DATA_MESSAGE",
                Some(Text(owner)),
                Some(Text(log_group)),
                Some(Text(log_stream)),
                Some(log_events),
            ) => Ok(Decoded::Data(LogData {
                owner,
                log_group,
                log_stream,
                subscription_filters: self.subscription_filters,
                log_events,
            })),
            ("CONTROL_MESSAGE", ..) => Ok(Decoded::Control),
            ("DATA_MESSAGE", ..) => Err(DecodeError::Envelope(serde::de::Error::custom(
                "a DATA_MESSAGE needs owner, logGroup, logStream and logEvents",
            ))),
            (other, ..) => Err(DecodeError::UnknownMessageType(other.to_owned())),
        }
    }
}

impl Decoded<'_> {
    /// The same, owning its text.
    pub fn into_owned(self) -> Decoded<'static> {
        match self {
            Decoded::Control => Decoded::Control,
            Decoded::Data(data) => Decoded::Data(data.into_owned()),
        }
    }
}

impl LogData<'_> {
    /// The same, owning its text.
    pub fn into_owned(self) -> LogData<'static> {
        let own = |text: Cow<'_, str>| Cow::Owned(text.into_owned());
        LogData {
            owner: own(self.owner),
            log_group: own(self.log_group),
            log_stream: own(self.log_stream),
            subscription_filters: self.subscription_filters.into_iter().map(own).collect(),
            log_events: self
                .log_events
                .into_iter()
                .map(|e| LogEvent {
                    id: own(e.id),
                    timestamp: e.timestamp,
                    message: own(e.message),
                    extracted_fields: e.extracted_fields,
                })
                .collect(),
        }
    }
}

/// Reads an inflated envelope with serde_json.
fn parse(json: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    match serde_json::from_slice::<Envelope>(json) {
        Ok(envelope) => envelope.decoded(),
        Err(e) => {
            // Say what kind of message failed, when that much can be read.
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Kind<'a> {
                #[serde(borrow)]
                message_type: Cow<'a, str>,
            }
            match serde_json::from_slice::<Kind>(json) {
                Ok(kind) if kind.message_type == "CONTROL_MESSAGE" => Ok(Decoded::Control),
                Ok(kind) if kind.message_type != "DATA_MESSAGE" => Err(
                    DecodeError::UnknownMessageType(kind.message_type.into_owned()),
                ),
                _ => Err(DecodeError::Envelope(e)),
            }
        }
    }
}

/// Gunzips `data` (all members) into `out`, failing once the output passes `limit`.
fn inflate(data: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    out.clear();
    if !data.starts_with(&[0x1f, 0x8b]) {
        return Err(DecodeError::NotGzip);
    }
    // The gzip trailer holds the inflated size (of the last member, modulo
    // 2^32): a hint that spares the buffer its regrowth, never trusted past the cap.
    let trailer = data.len().checked_sub(4).map(|at| &data[at..]);
    let hint = trailer
        .and_then(|t| <[u8; 4]>::try_from(t).ok())
        .map_or(data.len() * 8, |t| u32::from_le_bytes(t) as usize);
    out.reserve(hint.min(limit) + 1);
    let mut reader = flate2::read::MultiGzDecoder::new(data).take(limit as u64 + 1);
    reader.read_to_end(out).map_err(DecodeError::Inflate)?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(())
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Cow<'de, str>, D::Error> {
    struct Id;
    impl<'de> Visitor<'de> for Id {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an event id, a string or a number")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_owned()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_string()))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_string()))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_string()))
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

    /// Decodes into a buffer of its own, returning what owns its text.
    fn dec(data: &[u8], limits: Limits) -> Result<Decoded<'static>, DecodeError> {
        decode(data, limits, &mut Vec::new()).map(Decoded::into_owned)
    }

    pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// Verbatim what CloudWatch Logs delivers (as recorded from the stack's corrected moto).
    const GOLDEN: &str = r#"{"logEvents":[{"id":"00000001795635868711000000000000000000000000000000000001","timestamp":1795635868711,"message":"ERROR disk full"}],"logGroup":"/t1/1795635868057","logStream":"app-1","messageType":"DATA_MESSAGE","owner":"123456789012","subscriptionFilters":["errors"]}"#;

    #[test]
    fn golden_data_message() {
        let Decoded::Data(data) = dec(&gzip(GOLDEN.as_bytes()), Limits::default()).unwrap() else {
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
            dec(&gzip(control.as_bytes()), Limits::default()).unwrap(),
            Decoded::Control
        );
    }

    #[test]
    fn tolerant_of_unknown_fields_number_ids_and_string_timestamps() {
        let payload = r#"{"messageType":"DATA_MESSAGE","owner":"1","logGroup":"g","logStream":"s","policyLevel":"ACCOUNT_LEVEL_POLICY","subscriptionFilters":["f"],
            "logEvents":[{"id":42,"timestamp":"1795635868711","message":"m","extractedFields":{"ip":"10.0.0.1"},"future":true}]}"#;
        let Decoded::Data(data) = dec(&gzip(payload.as_bytes()), Limits::default()).unwrap() else {
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
            let err = dec(&record, limits).unwrap_err();
            assert_eq!(err.category(), want, "{err}");
        }
    }

    /// Text, escaped or not, is a view into the inflated payload: making
    /// documents copies no message.
    #[test]
    fn text_is_borrowed_from_the_payload_even_when_escaped() {
        let payload = GOLDEN.replace(
            "ERROR disk full",
            r#"{\"level\":\"error\",\"path\":\"C:\\\\tmp\"}"#,
        );
        let mut buffer = Vec::new();
        let Decoded::Data(data) =
            decode(&gzip(payload.as_bytes()), Limits::default(), &mut buffer).unwrap()
        else {
            panic!("data");
        };
        let event = &data.log_events[0];
        assert_eq!(event.message, r#"{"level":"error","path":"C:\\tmp"}"#);
        for text in [&event.message, &event.id, &data.owner, &data.log_group] {
            assert!(matches!(text, Cow::Borrowed(_)), "{text:?} is a copy");
        }
    }

    /// Nesting in what is read deeper than simd-json follows (1,024) is an
    /// error for the record, never a stack overflow of the worker; an unknown
    /// field is skipped however deep, without recursion.
    #[test]
    fn deep_nesting_is_a_bad_envelope_or_skipped() {
        let deep = |depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let at = r#""message""#;
        let unknown = GOLDEN.replace(at, &format!(r#""future":{},{at}"#, deep(1_000_000)));
        assert!(matches!(
            dec(&gzip(unknown.as_bytes()), Limits::default()),
            Ok(Decoded::Data(_))
        ));
        // Within simd-json's depth limit (1,024) what is read is read.
        let fields = format!(r#""extractedFields":{{"a":{}}},{at}"#, deep(1_000));
        assert!(
            dec(
                &gzip(GOLDEN.replace(at, &fields).as_bytes()),
                Limits::default()
            )
            .is_ok()
        );
        for depth in [100_000, 1_000_000] {
            let fields = format!(r#""extractedFields":{{"a":{}}},{at}"#, deep(depth));
            let payload = GOLDEN.replace(at, &fields);
            match dec(&gzip(payload.as_bytes()), Limits::default()) {
                Err(err) => assert_eq!(err.category(), "bad_envelope", "{depth}: {err}"),
                Ok(_) => panic!("nested {depth} deep, the envelope was read"),
            }
        }
    }

    /// Past what simd-json reads, serde_json reads the payload, borrowing too.
    #[test]
    fn a_payload_past_what_simd_json_reads_is_read_by_serde_json() {
        let line = "x".repeat(SIMD_MAX_INPUT);
        let payload = GOLDEN.replace("ERROR disk full", &line);
        let mut buffer = Vec::new();
        let Decoded::Data(data) =
            decode(&gzip(payload.as_bytes()), Limits::default(), &mut buffer).unwrap()
        else {
            panic!("data");
        };
        assert!(matches!(&data.log_events[0].message, Cow::Borrowed(m) if *m == line));
    }

    #[test]
    fn a_gzip_bomb_is_rejected_at_the_cap() {
        let bomb = gzip(&vec![b' '; 16 << 20]);
        assert!(
            bomb.len() < 64 << 10,
            "16 MiB of spaces compresses to {} bytes",
            bomb.len()
        );
        let err = dec(
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
        assert!(matches!(dec(&two, Limits::default()), Ok(Decoded::Data(_))));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = dec(&bytes, Limits { max_inflated_bytes: 1 << 16 });
            let mut gz = vec![0x1f, 0x8b];
            gz.extend(&bytes);
            let _ = dec(&gz, Limits { max_inflated_bytes: 1 << 16 });
            let _ = dec(&gzip(&bytes), Limits { max_inflated_bytes: 1 << 16 });
        }
    }
}
