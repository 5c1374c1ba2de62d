//! Realistic CloudWatch Logs subscription payloads for the benchmarks: VPC Flow
//! Logs, CloudTrail, Lambda and JSON application logs, generated from a fixed
//! seed so runs compare like with like.
#![allow(dead_code)] // each benchmark uses a different part

use std::io::Write;

use logsub::api::{
    CloudTrailTransform, JsonTransform, LambdaTransform, Transform, VpcFlowLogTransform,
};
use logsub::worker::transform::Compiled;
use serde_json::json;

/// Log events in each record.
pub const EVENTS_PER_RECORD: usize = 100;

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

/// `count` gzip-compressed CloudWatch Logs payloads of `kind` (`vpc-flow`,
/// `cloudtrail`, `lambda`, `json`), each of 100 events.
pub fn records(kind: &str, count: usize) -> Vec<Vec<u8>> {
    records_from(kind, count, 0)
}

/// As [`records`], numbering the events from record `first` on, so that
/// different shards hold different events.
pub fn records_from(kind: &str, count: usize, first: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ first as u64);
    (first..first + count)
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

/// The transforms a subscription of `kind` would use.
pub fn transforms(kind: &str) -> Vec<Compiled> {
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
