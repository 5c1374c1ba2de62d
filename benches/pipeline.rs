//! decode → transforms → NDJSON encoding of realistic CloudWatch payloads (100
//! events per record), next to the floor in the same run: plain inflate plus a
//! JSON parse of the envelope. Throughput is in compressed bytes.
//!
//!     cargo bench --bench pipeline
//!
//! The ratio to report is `ours / baseline` throughput per payload kind.

use std::hint::black_box;
use std::io::{Read, Write};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logsub::api::{
    CloudTrailTransform, JsonTransform, LambdaTransform, Transform, VpcFlowLogTransform,
};
use logsub::worker::decode::cloudwatch::{Decoded, Limits, decode};
use logsub::worker::document::from_data;
use logsub::worker::transform::{Compiled, apply};
use serde_json::json;

const EVENTS_PER_RECORD: usize = 100;
const RECORDS: usize = 20;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

/// A deterministic pseudo-random sequence, so runs compare like with like.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn message(kind: &str, rng: &mut Rng, i: usize) -> String {
    match kind {
        "vpc-flow" => format!(
            "2 123456789012 eni-0a1b2c3d{:04x} 10.0.{}.{} 172.31.{}.{} {} {} 6 {} {} 1795635868 1795635928 {} OK",
            rng.below(65536), rng.below(256), rng.below(256), rng.below(256), rng.below(256),
            rng.below(65536), [22, 80, 443, 5432][rng.below(4) as usize], rng.below(100), rng.below(100_000),
            ["ACCEPT", "REJECT"][rng.below(2) as usize]
        ),
        "cloudtrail" => json!({
            "eventVersion": "1.08",
            "userIdentity": {"type": "IAMUser", "principalId": "AIDAJDPLRKLG7UEXAMPLE", "arn": "arn:aws:iam::123456789012:user/Mary_Major",
                "accountId": "123456789012", "accessKeyId": "AKIAIOSFODNN7EXAMPLE", "userName": "Mary_Major"},
            "eventTime": "2026-11-25T19:44:28Z", "eventSource": "s3.amazonaws.com",
            "eventName": (["GetObject", "PutObject", "ListBuckets"][rng.below(3) as usize]),
            "awsRegion": "us-east-1", "sourceIPAddress": format!("203.0.113.{}", rng.below(256)),
            "userAgent": "aws-sdk-go-v2/1.30.0", "requestParameters": {"bucketName": "logs", "key": format!("k/{i}")},
            "responseElements": null, "requestID": format!("{:016X}", rng.next()), "eventID": format!("{:032x}", rng.next()),
            "readOnly": true, "eventType": "AwsApiCall", "managementEvent": false, "recipientAccountId": "123456789012",
        })
        .to_string(),
        "lambda" => match i % 4 {
            0 => format!("START RequestId: {:08x}-6bc2-4365-b021-0ce6b2e64ab0 Version: $LATEST", rng.next() as u32),
            1 => format!("2026-11-25T19:44:28.711Z\t{:08x}-6bc2-4365-b021-0ce6b2e64ab0\tINFO\t{{\"orderId\":{},\"status\":\"paid\"}}", rng.next() as u32, rng.below(1_000_000)),
            2 => format!("END RequestId: {:08x}-6bc2-4365-b021-0ce6b2e64ab0", rng.next() as u32),
            _ => format!(
                "REPORT RequestId: {:08x}-6bc2-4365-b021-0ce6b2e64ab0\tDuration: {}.{} ms\tBilled Duration: {} ms\tMemory Size: 128 MB\tMax Memory Used: {} MB\t",
                rng.next() as u32, rng.below(900), rng.below(100), rng.below(1000), rng.below(128)
            ),
        },
        _ => json!({
            "level": (["info", "warn", "error"][rng.below(3) as usize]), "ts": 1795635868.711, "msg": "request served",
            "http": {"method": "GET", "path": format!("/api/orders/{}", rng.below(100_000)), "status": 200, "latency_ms": rng.below(500)},
            "user": {"id": rng.below(10_000), "tier": "gold"}, "trace_id": format!("{:032x}", rng.next()),
        })
        .to_string(),
    }
}

fn records(kind: &str) -> Vec<Vec<u8>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..RECORDS)
        .map(|r| {
            let events: Vec<_> = (0..EVENTS_PER_RECORD)
                .map(|i| {
                    json!({"id": format!("{:020}{:036}", 1_795_635_868_711u64 + i as u64, r * EVENTS_PER_RECORD + i),
                        "timestamp": 1_795_635_868_711u64 + i as u64, "message": message(kind, &mut rng, i)})
                })
                .collect();
            let envelope = json!({"messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": format!("/bench/{kind}"),
                "logStream": "stream-1", "subscriptionFilters": ["logsub-bench"], "logEvents": events});
            gzip(envelope.to_string().as_bytes())
        })
        .collect()
}

fn transforms(kind: &str) -> Vec<Compiled> {
    let t = match kind {
        "vpc-flow" => vec![Transform::VpcFlowLog(VpcFlowLogTransform::default())],
        "cloudtrail" => vec![Transform::CloudTrail(CloudTrailTransform {})],
        "lambda" => vec![
            Transform::Lambda(LambdaTransform {}),
            Transform::Json(JsonTransform {}),
        ],
        _ => vec![Transform::Json(JsonTransform {})],
    };
    t.iter().map(Compiled::new).collect()
}

fn baseline(records: &[Vec<u8>]) -> usize {
    let mut events = 0;
    for record in records {
        let mut json = Vec::new();
        flate2::read::MultiGzDecoder::new(record.as_slice())
            .read_to_end(&mut json)
            .expect("inflate");
        let envelope: serde_json::Value = serde_json::from_slice(&json).expect("envelope");
        events += envelope["logEvents"].as_array().map_or(0, Vec::len);
    }
    events
}

fn ours(records: &[Vec<u8>], transforms: &[Compiled], out: &mut Vec<u8>) -> usize {
    let mut docs = 0;
    for record in records {
        let Ok(Decoded::Data(data)) = decode(record, Limits::default()) else {
            panic!("decode");
        };
        for event in from_data(data) {
            for doc in apply(transforms, event) {
                serde_json::to_writer(&mut *out, &doc).expect("encode");
                out.push(b'\n');
                docs += 1;
            }
        }
        out.clear();
    }
    docs
}

fn pipeline(c: &mut Criterion) {
    for kind in ["vpc-flow", "cloudtrail", "lambda", "json"] {
        let records = records(kind);
        let transforms = transforms(kind);
        let bytes: usize = records.iter().map(Vec::len).sum();
        let mut group = c.benchmark_group(kind);
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function("baseline: inflate + envelope parse", |b| {
            b.iter(|| black_box(baseline(black_box(&records))))
        });
        let mut out = Vec::with_capacity(1 << 20);
        group.bench_function("logsub: decode + transforms + NDJSON", |b| {
            b.iter(|| black_box(ours(black_box(&records), &transforms, &mut out)))
        });
        group.finish();
    }
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
