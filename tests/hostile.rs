//! Records built to be slow or huge (anyone who can write to a subscribed log
//! group shapes them) cost time and memory in proportion to their size: a
//! message of 100,000 JSON keys, a CloudTrail batch of 80,000 records, a first
//! event of 4 MiB followed by 100,000 empty ones. Each shape is prepared at a
//! size n and at 8n in the same run; linear work grows about 8 times, the
//! square of it 64 times. Memory is counted by this binary's allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use logsub::api::{CloudTrailTransform, JsonTransform, Transform};
use logsub::aws::kinesis::Record;
use logsub::contract::SequenceNumber;
use logsub::worker::decode::cloudwatch::Limits;
use logsub::worker::pipeline::{Kind, PartLimits, Sizing, prepare};
use logsub::worker::sink::NdJson;
use logsub::worker::transform::Compiled;

/// Counts the bytes allocated, and the most live at once.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static TOTAL: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        TOTAL.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let grown = new_size - layout.size();
            let live = LIVE.fetch_add(grown, Ordering::Relaxed) + grown;
            PEAK.fetch_max(live, Ordering::Relaxed);
            TOTAL.fetch_add(grown, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What preparing one record cost.
#[derive(Debug, Clone, Copy)]
struct Cost {
    time: Duration,
    /// Most bytes live at once beyond what was live before.
    peak: usize,
    /// Bytes allocated in all.
    allocated: usize,
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

fn envelope(events: &str) -> Vec<u8> {
    format!(
        r#"{{"messageType":"DATA_MESSAGE","owner":"123456789012","logGroup":"/g","logStream":"s","subscriptionFilters":["f"],"logEvents":[{events}]}}"#
    )
    .into_bytes()
}

fn event(i: usize, message: &str) -> String {
    format!(
        r#"{{"id":"{i}","timestamp":1795635868711,"message":{}}}"#,
        serde_json::to_string(message).unwrap()
    )
}

/// Prepares `data` through `transforms` (the fastest of three runs, and the
/// memory of the first); every event must come out as documents.
fn cost(data: &[u8], transforms: &[Compiled], documents: usize) -> Cost {
    let limits = PartLimits {
        max_bytes: 5 << 20,
        decode: Limits {
            max_inflated_bytes: 64 << 20,
        },
        budget: Duration::from_secs(600),
        max_output: 1 << 30,
        object_meta: false,
    };
    let record = Record {
        sequence: SequenceNumber::parse("1").unwrap(),
        data: data.to_vec(),
        arrival_millis: None,
    };
    let mut best: Option<Cost> = None;
    for _ in 0..3 {
        let live = LIVE.load(Ordering::Relaxed);
        PEAK.store(live, Ordering::Relaxed);
        let total = TOTAL.load(Ordering::Relaxed);
        let started = Instant::now();
        let prepared = prepare(
            "shardId-0",
            &record,
            transforms,
            &NdJson,
            &limits,
            &mut Sizing::default(),
        )
        .unwrap();
        let time = started.elapsed();
        assert!(
            matches!(prepared.kind, Kind::Documents(_)),
            "{:?}",
            prepared.kind
        );
        assert_eq!(prepared.encoded.len(), documents);
        let run = Cost {
            time,
            peak: PEAK.load(Ordering::Relaxed).saturating_sub(live),
            allocated: TOTAL.load(Ordering::Relaxed).saturating_sub(total),
        };
        drop(prepared);
        best = Some(match best {
            None => run,
            Some(b) => Cost {
                time: b.time.min(run.time),
                ..b
            },
        });
    }
    best.unwrap()
}

/// The shape at n and at 8n: time and memory grow about 8 times, never 64.
fn linear(name: &str, make: impl Fn(usize) -> (Vec<u8>, usize), n: usize, transforms: &[Compiled]) {
    let (small, small_docs) = make(n);
    let (large, large_docs) = make(8 * n);
    let a = cost(&gzip(&small), transforms, small_docs);
    let b = cost(&gzip(&large), transforms, large_docs);
    let ratio = |x: f64, y: f64| y / x.max(1.0);
    let time = ratio(a.time.as_secs_f64() * 1e6, b.time.as_secs_f64() * 1e6);
    let peak = ratio(a.peak as f64, b.peak as f64);
    let allocated = ratio(a.allocated as f64, b.allocated as f64);
    eprintln!(
        "{name}: n={n}: {a:?}; 8n: {b:?}; ratios: time {time:.1}, peak memory {peak:.1}, allocated {allocated:.1}"
    );
    // Linear is 8; allow for caches and allocator rounding, far below 64.
    assert!(
        time < 24.0,
        "{name}: time grew {time:.1} times for 8 times the input"
    );
    assert!(peak < 16.0, "{name}: peak memory grew {peak:.1} times");
    assert!(
        allocated < 16.0,
        "{name}: allocations grew {allocated:.1} times"
    );
    // Memory stays within a multiple of the inflated record.
    assert!(
        b.peak < 64 * large.len(),
        "{name}: {} bytes live for a record of {} bytes inflated",
        b.peak,
        large.len()
    );
}

fn many_json_keys() {
    let json = [Compiled::new(&Transform::Json(JsonTransform {}))];
    linear(
        "json keys",
        |keys| {
            let message: String = format!(
                "{{{}}}",
                (0..keys)
                    .map(|k| format!("\"k{k}\":{k}"))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            (envelope(&event(0, &message)), 1)
        },
        12_500,
        &json,
    );
}

fn many_cloudtrail_records() {
    let trail = [Compiled::new(&Transform::CloudTrail(
        CloudTrailTransform {},
    ))];
    linear(
        "cloudtrail records",
        |records| {
            let message = format!(
                r#"{{"Records":[{}]}}"#,
                (0..records)
                    .map(|i| format!(
                        r#"{{"eventTime":"2026-11-25T19:44:28Z","eventName":"GetObject","n":{i}}}"#
                    ))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            (envelope(&event(0, &message)), records)
        },
        10_000,
        &trail,
    );
}

fn a_huge_event_then_many_empty_ones() {
    linear(
        "huge then empty events",
        |empty| {
            let big = "x".repeat(4 << 20);
            let mut events = vec![event(0, &big)];
            events.extend((1..=empty).map(|i| event(i, "")));
            (envelope(&events.join(",")), empty + 1)
        },
        12_500,
        &[],
    );
}

/// A record that is small on the wire and expands beyond what any record
/// may become (log group and stream names of 512 characters on 150,000 empty
/// events: 450 KB compressed, 200 MB of documents) is a `too_large` dead
/// letter, and preparing it holds a bounded amount of memory: its documents
/// are encoded one at a time, never held all at once.
fn a_small_record_that_expands_too_far() {
    let name = "n".repeat(512);
    let events: Vec<String> = (0..150_000)
        .map(|i| format!(r#"{{"id":"{i}","timestamp":1795635868711,"message":""}}"#))
        .collect();
    let json = format!(
        r#"{{"messageType":"DATA_MESSAGE","owner":"123456789012","logGroup":"/{name}","logStream":"{name}","logEvents":[{}]}}"#,
        events.join(",")
    );
    let data = gzip(json.as_bytes());
    let limits = PartLimits {
        max_bytes: 5 << 20,
        decode: Limits::default(),
        budget: Duration::from_secs(600),
        max_output: 64 << 20,
        object_meta: false,
    };
    let record = Record {
        sequence: SequenceNumber::parse("1").unwrap(),
        data,
        arrival_millis: None,
    };
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    let prepared = prepare(
        "shardId-0",
        &record,
        &[],
        &NdJson,
        &limits,
        &mut Sizing::default(),
    )
    .unwrap();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(live);
    eprintln!(
        "expanding record: {} bytes compressed, {} inflated: {:?}, peak {peak} bytes",
        record.data.len(),
        json.len(),
        prepared.kind
    );
    assert_eq!(prepared.kind, Kind::DeadLetter("too_large"));
    assert!(peak < 200 << 20, "{peak} bytes live preparing it");
}

/// One test, so that nothing else allocates while a record is measured.
#[test]
fn hostile_records_cost_their_size() {
    many_json_keys();
    many_cloudtrail_records();
    a_huge_event_then_many_empty_ones();
    a_small_record_that_expands_too_far();
}
