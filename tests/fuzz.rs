//! Fuzzing of decode + transforms for a bounded time: arbitrary bytes, gzip of
//! arbitrary bytes, valid CloudWatch Logs payloads mutated before and after
//! compression, and payloads shaped to be slow or huge, through every
//! transform in several orders. Whatever comes in,
//! a record becomes documents, a control message or a dead letter; nothing
//! panics, and memory stays within the inflate cap.
//!
//!     LOGSUB_FUZZ_SECONDS=600 cargo test --release --test fuzz -- --nocapture
//!
//! A failure prints its seed; `LOGSUB_FUZZ_SEED=<seed>` replays it.

use std::io::Write;
use std::time::{Duration, Instant};

use logsub::api::{
    CloudTrailTransform, JsonTransform, LambdaTransform, Transform, VpcFlowLogTransform,
};
use logsub::aws::kinesis::Record;
use logsub::contract::SequenceNumber;
use logsub::worker::decode::cloudwatch::Limits;
use logsub::worker::process::{Outcome, process};
use logsub::worker::transform::Compiled;

/// xorshift64*: fast, and reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Messages the transforms take apart, and ones made to trip them.
const MESSAGES: &[&str] = &[
    "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK",
    "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA",
    "2 123456789010 eni-1 1.2.3.4 5.6.7.8 99999999999999999999999 22 6 -5 x 9223372036854775807 -9223372036854775808 ACCEPT OK",
    "START RequestId: 8f507cfc-xmpl-4697-b07a-ac58fc914c95 Version: $LATEST",
    "REPORT RequestId: 8f507cfc\tDuration: 2.49 ms\tBilled Duration: 3 ms\tMemory Size: 128 MB\tMax Memory Used: 39 MB\tInit Duration: 139.25 ms",
    "2026-11-25T19:44:28.711Z\tf1b2\tINFO\t{\"user\":\"ann\",\"n\":[1,2,{\"x\":null}]}",
    "[ERROR]\t2026-11-25T19:44:28.711Z\tf1b2\tboom",
    r#"{"eventVersion":"1.08","eventTime":"2019-06-19T00:18:31Z","eventName":"StartLogging","Records":[{"a":1},2,"x",null]}"#,
    r#"{"Records":[]}"#,
    r#"{"Records":{"not":"an array"}}"#,
    r#"{"@id":"spoof","@timestamp":1,"message":{"deep":[[[[[[[[[[1]]]]]]]]]]}}"#,
    "{\"a\":\"\\ud800\"}",
    "{\n  \"user\": {\r\n    \"tags\": [\"a\",\n \"b\"]\n  },\n  \"n\": 1e300\n}",
    "{\"m\": {\"big\": [1e400]}, \"t\": \"ok\"}",
    "{\"m\": {\"a\": 1, \"\\u0061\": [2]}, \"s\": [\"\\ud800\"], \"t\": \"ok\"}",
    "{\"s\": [\"\\udc00\"]}",
    "{\"Records\": [{\"eventTime\": \"2019-06-19T00:18:31Z\", \"a\": \"\\ud800\"}]}",
    "{\"Records\": [{\"eventName\": \"E\", \"eventName\": \"F\"}]}",
    "2026-11-25T19:44:28.711Z\tf1b2\tINFO\t{\n \"ctx\": [\n  {\"x\": 1}\n ]\n}",
    "{\"Records\": [\n {\"eventTime\": \"2019-06-19T00:18:31Z\",\n  \"a\": {\"b\":\n 1}}\n]}",
    "{not json}",
    "[1,2,3]",
    "",
    "\u{0}\u{7f}\u{feff}ünïcödé \t\n",
];

fn transforms(rng: &mut Rng) -> Vec<Compiled> {
    let mut all = vec![
        Transform::Lambda(LambdaTransform {}),
        Transform::Json(JsonTransform {}),
        Transform::VpcFlowLog(VpcFlowLogTransform::default()),
        Transform::CloudTrail(CloudTrailTransform {}),
    ];
    for i in (1..all.len()).rev() {
        all.swap(i, rng.below(i + 1));
    }
    all.truncate(rng.below(5));
    all.iter().map(Compiled::new).collect()
}

fn envelope(rng: &mut Rng) -> String {
    let events: Vec<String> = (0..rng.below(8))
        .map(|i| {
            let id = match rng.below(3) {
                0 => format!("\"{:056}\"", rng.next()),
                1 => rng.next().to_string(),
                _ => "\"\"".to_owned(),
            };
            let timestamp = match rng.below(3) {
                0 => (rng.next() % 4_000_000_000_000).to_string(),
                1 => format!("\"{}\"", rng.next() % 4_000_000_000_000),
                _ => format!("{}", rng.next() as i64),
            };
            let message = serde_json::to_string(*rng.pick(MESSAGES)).expect("string");
            let extracted = if rng.below(4) == 0 {
                r#","extractedFields":{"status":"200","n":"007","obj":"{\"a\":1}","@id":"x"}"#
            } else {
                ""
            };
            format!(
                r#"{{"id":{id},"timestamp":{timestamp},"message":{message}{extracted},"i":{i}}}"#
            )
        })
        .collect();
    let kind = *rng.pick(&[
        "DATA_MESSAGE",
        "DATA_MESSAGE",
        "DATA_MESSAGE",
        "DATA_MESSAGE",
        "CONTROL_MESSAGE",
        "OTHER",
    ]);
    format!(
        r#"{{"messageType":"{kind}","owner":"123456789012","logGroup":"/g","logStream":"s","subscriptionFilters":["f"],"policyLevel":"ACCOUNT_LEVEL_POLICY","logEvents":[{}]}}"#,
        events.join(",")
    )
}

fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        if data.is_empty() {
            data.push(rng.next() as u8);
            continue;
        }
        let at = rng.below(data.len());
        match rng.below(5) {
            0 => data[at] ^= 1 << rng.below(8),
            1 => data[at] = rng.next() as u8,
            2 => data.truncate(at),
            3 => data.insert(at, *rng.pick(b"{}[]\",:\\0-e ")),
            _ => {
                let end = (at + rng.below(16)).min(data.len());
                data.drain(at..end);
            }
        }
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).expect("gzip");
    gz.finish().expect("gzip")
}

/// Records shaped to be slow or huge rather than malformed (see
/// tests/hostile.rs for their cost): many JSON keys in one message, a
/// CloudTrail batch of many records, a large first event and many empty ones,
/// sized to the fuzzing cap.
fn hostile(rng: &mut Rng) -> Vec<u8> {
    let n = 1 + rng.below(1500);
    let message = |text: String| serde_json::to_string(&text).expect("string");
    let events = match rng.below(3) {
        0 => {
            let keys: Vec<String> = (0..n).map(|k| format!("\"k{}\":{k}", k % 700)).collect();
            format!(
                r#"{{"id":"1","timestamp":1,"message":{}}}"#,
                message(format!("{{{}}}", keys.join(",")))
            )
        }
        1 => {
            let records: Vec<String> = (0..n)
                .map(|i| format!(r#"{{"eventTime":"2026-11-25T19:44:28Z","n":{i}}}"#))
                .collect();
            format!(
                r#"{{"id":"1","timestamp":1,"message":{}}}"#,
                message(format!(r#"{{"Records":[{}]}}"#, records.join(",")))
            )
        }
        _ => {
            let mut events = vec![format!(
                r#"{{"id":"0","timestamp":1,"message":{}}}"#,
                message("x".repeat(rng.below(16 << 10)))
            )];
            events.extend((1..n).map(|i| format!(r#"{{"id":"{i}","timestamp":1,"message":""}}"#)));
            events.join(",")
        }
    };
    gzip(
        format!(
            r#"{{"messageType":"DATA_MESSAGE","owner":"1","logGroup":"/g","logStream":"s","logEvents":[{events}]}}"#
        )
        .as_bytes(),
    )
}

fn input(rng: &mut Rng, bomb: &[u8]) -> Vec<u8> {
    match rng.below(7) {
        6 => hostile(rng),
        0 => {
            let n = rng.below(512);
            rng.bytes(n)
        }
        1 => {
            let n = rng.below(512);
            gzip(&rng.bytes(n))
        }
        2 => gzip(envelope(rng).as_bytes()),
        3 => {
            let mut json = envelope(rng).into_bytes();
            mutate(rng, &mut json);
            gzip(&json)
        }
        4 => {
            let mut compressed = gzip(envelope(rng).as_bytes());
            mutate(rng, &mut compressed);
            compressed
        }
        _ => bomb.to_vec(),
    }
}

#[test]
fn decode_and_transforms_survive_anything() {
    let seconds: u64 = std::env::var("LOGSUB_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("LOGSUB_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    let limits = Limits {
        max_inflated_bytes: 32 << 10,
    };
    // Inflates past the cap.
    let bomb = gzip(&vec![b' '; 64 << 10]);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut runs, mut documents, mut controls, mut rejected) = (0u64, 0u64, 0u64, 0u64);
    let mut case = seed;
    while Instant::now() < deadline {
        // One generator per case, so a failure names the case to replay.
        let mut rng = Rng(case);
        let data = input(&mut rng, &bomb);
        let transforms = transforms(&mut rng);
        let record = Record {
            sequence: SequenceNumber::parse(&(runs + 1).to_string()).expect("sequence"),
            data,
            arrival_millis: None,
        };
        let outcome = std::panic::catch_unwind(|| {
            process(
                "shardId-0",
                &record,
                &transforms,
                limits,
                Duration::from_secs(60),
            )
        });
        let Ok(outcome) = outcome else {
            panic!("case LOGSUB_FUZZ_SEED={case} panicked");
        };
        match outcome {
            Outcome::Documents(docs) => {
                for doc in &docs {
                    assert!(
                        doc["@id"].is_string() && doc["@timestamp"].to_value().is_string(),
                        "case LOGSUB_FUZZ_SEED={case}: a document without @id or @timestamp: {doc:?}"
                    );
                    // The wire form: one line, the same JSON as the document.
                    let mut wire = Vec::new();
                    doc.write_json(&mut wire);
                    assert!(
                        !wire.contains(&b'\n') && !wire.contains(&b'\r'),
                        "case LOGSUB_FUZZ_SEED={case}: a document over more than one line"
                    );
                    let written: serde_json::Value = serde_json::from_slice(&wire)
                        .unwrap_or_else(|e| panic!("case LOGSUB_FUZZ_SEED={case}: {e}"));
                    assert_eq!(
                        written,
                        serde_json::to_value(doc).expect("every document encodes"),
                        "case LOGSUB_FUZZ_SEED={case}"
                    );
                }
                documents += docs.len() as u64;
            }
            Outcome::Control => controls += 1,
            Outcome::Rejected(dead) => {
                let doc = dead.to_document(0);
                assert!(
                    doc["@id"]
                        .as_str()
                        .is_some_and(|id| id.starts_with("deadletter-"))
                );
                rejected += 1;
            }
        }
        runs += 1;
        case = Rng(case).next() | 1;
    }
    eprintln!(
        "fuzzed decode + transforms for {seconds} s from seed {seed}: {runs} records, \
         {documents} documents, {controls} control messages, {rejected} dead letters; no failure"
    );
    assert!(
        runs > 0 && documents > 0 && rejected > 0,
        "every path was reached"
    );
}
