//! decode → transforms → NDJSON encoding of realistic CloudWatch payloads (100
//! events per record), beside the floor: plain inflate plus a JSON parse of
//! the envelope. Both run on this one thread, taking turns round after round
//! (see `ratio`), and are measured in compressed bytes per CPU second.
//!
//!     cargo bench --bench pipeline [-- --rounds 15 --kind vpc-flow]
//!
//! The figure to report is the median ratio `logsub / floor` per payload kind,
//! with its spread.

mod payloads;
mod ratio;

use std::hint::black_box;
use std::io::Read;

use logsub::worker::decode::cloudwatch::{Decoded, Limits, decode};
use logsub::worker::document::from_data;
use logsub::worker::transform::{Compiled, apply_each};
use payloads::{records, transforms};
use ratio::{alternate, thread_cpu};

// The worker's allocator, so the bench measures what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// As the worker prepares records: into one inflate buffer and one output
/// buffer, reused record after record.
fn ours(
    records: &[Vec<u8>],
    transforms: &[Compiled],
    (inflated, out): (&mut Vec<u8>, &mut Vec<u8>),
) -> usize {
    let mut docs = 0;
    for record in records {
        let Ok(Decoded::Data(data)) = decode(record, Limits::default(), inflated) else {
            panic!("decode");
        };
        for event in from_data(data) {
            apply_each(transforms, event, &mut |doc| {
                doc.write_json(out);
                out.push(b'\n');
                docs += 1;
                true
            });
        }
        out.clear();
    }
    docs
}

/// Compressed bytes per CPU second of `run`, called as often as fits in
/// about `target` nanoseconds (at least once).
fn throughput(bytes: usize, target: u64, mut run: impl FnMut() -> usize) -> f64 {
    let start = thread_cpu();
    let mut calls = 0u64;
    while calls == 0 || thread_cpu() - start < target {
        black_box(run());
        calls += 1;
    }
    (bytes as u64 * calls) as f64 / ((thread_cpu() - start) as f64 / 1e9)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs one short round.
    let quick = !std::env::args().any(|a| a == "--bench");
    let args: Vec<String> = std::env::args().collect();
    let rounds = args
        .windows(2)
        .find(|w| w[0] == "--rounds")
        .map_or(if quick { 1 } else { 15 }, |w| {
            w[1].parse().expect("rounds")
        });
    let target = if quick { 0 } else { 300_000_000 };
    println!("pipeline: one thread, floor and logsub alternating, {rounds} rounds");
    let only = args
        .windows(2)
        .find(|w| w[0] == "--kind")
        .map(|w| w[1].clone());
    for kind in ["vpc-flow", "cloudtrail", "lambda", "json"] {
        if only.as_ref().is_some_and(|k| k != kind) {
            continue;
        }
        let records = records(kind, 20);
        let transforms = transforms(kind);
        let bytes: usize = records.iter().map(Vec::len).sum();
        let (mut inflated, mut out) = (Vec::new(), Vec::with_capacity(1 << 20));
        let events = baseline(&records);
        assert!(ours(&records, &transforms, (&mut inflated, &mut out)) >= events);
        let measured = alternate(
            rounds,
            || throughput(bytes, target, || baseline(black_box(&records))),
            || {
                throughput(bytes, target, || {
                    ours(black_box(&records), &transforms, (&mut inflated, &mut out))
                })
            },
        );
        let mib = |s: f64| s / 1048576.0;
        println!(
            "{kind:>10}: floor (inflate + envelope parse) {:6.1} MiB/s | logsub (decode + transforms + NDJSON) {:6.1} MiB/s | ratio {:.2}",
            mib(measured.baseline.median()),
            mib(measured.ours.median()),
            measured.ratio
        );
    }
}
