//! decode → transforms → NDJSON encoding of realistic CloudWatch payloads (100
//! events per record), next to the floor in the same run: plain inflate plus a
//! JSON parse of the envelope. Throughput is in compressed bytes.
//!
//!     cargo bench --bench pipeline
//!
//! The ratio to report is `ours / baseline` throughput per payload kind.

mod payloads;

use std::hint::black_box;
use std::io::Read;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logsub::worker::decode::cloudwatch::{Decoded, Limits, decode};
use logsub::worker::document::from_data;
use logsub::worker::transform::{Compiled, apply};
use payloads::{records, transforms};

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
        let records = records(kind, 20);
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
