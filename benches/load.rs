//! The load harness: the worker's CPU cost per compressed MiB through the whole
//! shard path (reader bookkeeping, decode, transforms, encoding, batching,
//! acknowledgement, checkpointing) with a sink that discards, many shards at
//! once on the worker's runtime, fed from records already fetched (the local
//! emulator cannot serve 2 MiB/s per shard, so its wire time must not be what is
//! measured). Next to it, in the same run, the floor: inflate plus an envelope
//! parse with a SIMD JSON parser, on one thread.
//!
//!     cargo bench --bench load [-- --shards 32 --records 300 --threads 2 --rounds 5]
//!
//! Both are reported as shards per core at the Kinesis read limit (2 MiB/s per
//! shard), and ours as a ratio of the floor: the two take turns `--rounds`
//! times (5) and the median ratio is reported with its spread.
//!
//!     cargo bench --bench load -- --stalled 600 [--shards 25]
//!
//! instead feeds the shards without end into a sink that never answers, and
//! reports the process's resident memory every 10 s: it must stay flat.
//!
//! `--plot <file.svg>` also draws what was measured (docs/bench/).

mod harness;
mod payloads;
mod plot;
mod ratio;

use std::borrow::Cow;
use std::io::Read as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use harness::MemoryLease;
use logsub::aws::kinesis::Record;
use logsub::contract::SequenceNumber;
use logsub::telemetry::WorkerMetrics;
use logsub::worker::health::ShardCounters;
use logsub::worker::shard::{self, Resume, ShardExit};
use logsub::worker::sink::{Batch, Delivered, NdJson, Sink, SinkError};
use logsub::worker::source::kinesis::reader::Read;
use ratio::{alternate, process_cpu, thread_cpu};
use serde::Deserialize;
use tokio::sync::watch;

// The worker's allocator, so the harness measures what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Kinesis read limit per shard.
const SHARD_BYTES_PER_SECOND: f64 = 2.0 * 1024.0 * 1024.0;
/// Records in one GetRecords answer at that limit (five calls a second).
const RECORDS_PER_READ: usize = 100;

struct Options {
    shards: usize,
    records: usize,
    threads: usize,
    rounds: usize,
}

fn options() -> Options {
    let mut o = Options {
        shards: 32,
        records: 300,
        threads: std::thread::available_parallelism().map_or(2, usize::from),
        rounds: 5,
    };
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        let value = || pair[1].parse().expect("a number");
        match pair[0].as_str() {
            "--shards" => o.shards = value(),
            "--records" => o.records = value(),
            "--threads" => o.threads = value(),
            "--rounds" => o.rounds = value(),
            _ => {}
        }
    }
    o
}

/// The floor: inflate and parse the envelope (borrowing every string it can).
fn floor(records: &[Vec<u8>], rounds: usize) -> (u64, u64) {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)] // parsed, never read: parsing is what is measured
    struct Envelope<'a> {
        #[serde(borrow)]
        message_type: Cow<'a, str>,
        #[serde(borrow)]
        owner: Cow<'a, str>,
        #[serde(borrow)]
        log_group: Cow<'a, str>,
        #[serde(borrow)]
        log_stream: Cow<'a, str>,
        #[serde(borrow)]
        subscription_filters: Vec<Cow<'a, str>>,
        #[serde(borrow)]
        log_events: Vec<Event<'a>>,
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Event<'a> {
        #[serde(borrow)]
        id: Cow<'a, str>,
        timestamp: i64,
        #[serde(borrow)]
        message: Cow<'a, str>,
    }
    let start = thread_cpu();
    let mut bytes = 0u64;
    let mut events = 0usize;
    let mut json = Vec::with_capacity(1 << 20);
    for _ in 0..rounds {
        for record in records {
            json.clear();
            flate2::read::MultiGzDecoder::new(record.as_slice())
                .read_to_end(&mut json)
                .expect("inflate");
            let envelope: Envelope = simd_json::serde::from_slice(&mut json).expect("envelope");
            events += std::hint::black_box(envelope.log_events.len());
            bytes += record.len() as u64;
        }
    }
    assert!(events > 0);
    (bytes, thread_cpu() - start)
}

/// Encodes like the stdout sink, then drops every batch.
struct Discard {
    delivered: AtomicU64,
}

impl Sink for Discard {
    type Encoder = NdJson;

    fn encoder(&self) -> &NdJson {
        &NdJson
    }

    async fn deliver(&self, batch: &Batch) -> Result<Delivered, SinkError> {
        self.delivered
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(Delivered::default())
    }

    fn concurrency(&self) -> usize {
        4
    }
}

/// A sink whose deliveries never finish.
struct Stalled;

impl Sink for Stalled {
    type Encoder = NdJson;

    fn encoder(&self) -> &NdJson {
        &NdJson
    }

    async fn deliver(&self, _: &Batch) -> Result<Delivered, SinkError> {
        std::future::pending().await
    }

    fn concurrency(&self) -> usize {
        4
    }
}

fn resident_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

/// 25 shards' worth of input without end into a stalled sink: resident memory
/// every 10 s for `seconds`.
fn stalled(seconds: u64, shards: usize, threads: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (context, _delivering) =
            harness::context(Arc::new(Stalled), payloads::transforms("vpc-flow"));
        let metrics = context.metrics.clone();
        let records = Arc::new(payloads::records("vpc-flow", 50));
        let (_stop_tx, stop) = watch::channel(false);
        for s in 0..shards {
            let records = records.clone();
            let mut n = 0;
            let from_feed = harness::feed_forever(move || {
                n += RECORDS_PER_READ;
                reads(&records, n - RECORDS_PER_READ, n).remove(0)
            });
            let resume = Resume {
                shard: format!("shardId-{s:012}"),
                checkpoint: None,
                counters: ShardCounters::default(),
            };
            tokio::spawn(shard::run(
                context.clone(),
                MemoryLease::default(),
                resume,
                from_feed,
                stop.clone(),
            ));
        }
        let started = Instant::now();
        let mut samples = Vec::new();
        while started.elapsed() < Duration::from_secs(seconds) {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let rss = resident_mib();
            samples.push((started.elapsed().as_secs_f64(), rss));
            println!(
                "{:>4} s: resident {rss:.1} MiB, {} records read",
                started.elapsed().as_secs(),
                metrics
                    .records_read
                    .get_or_create(&WorkerMetrics::shard("shardId-000000000000"))
                    .get()
            );
        }
        let max = samples.iter().map(|s| s.1).fold(0.0, f64::max);
        let last = samples.last().map_or(0.0, |s| s.1);
        println!(
            "stalled sink, {shards} shards, {seconds} s: resident memory at most {max:.1} MiB, {last:.1} MiB at the end"
        );
        plot::write_if_asked(&plot::Chart {
            title: &format!("Worker memory with a sink that never answers ({shards} shards)"),
            x_label: "seconds",
            y_label: "resident memory (MiB)",
            categories: Vec::new(),
            series: vec![plot::Series {
                name: "resident".into(),
                points: samples,
            }],
        });
    });
}

/// Records `from..to` of the samples `records` repeated over and over, as
/// GetRecords answers with rising sequence numbers.
fn reads(records: &[Vec<u8>], from: usize, to: usize) -> Vec<Read> {
    (from..to)
        .step_by(RECORDS_PER_READ)
        .map(|n| Read::Records {
            records: (n..(n + RECORDS_PER_READ).min(to))
                .map(|i| Record {
                    sequence: SequenceNumber::parse(&(i + 1).to_string()).expect("sequence"),
                    data: records[i % records.len()].clone(),
                    arrival_millis: None,
                })
                .collect(),
            millis_behind_latest: Some(0),
        })
        .collect()
}

struct Measured {
    bytes: u64,
    cpu_ns: u64,
    wall: Duration,
    documents: u64,
    checkpoints: u64,
}

fn ours(kind: &str, records: Arc<Vec<Vec<u8>>>, o: &Options) -> Measured {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.threads)
        .enable_all()
        .build()
        .expect("runtime");
    let transforms = payloads::transforms(kind);
    runtime.block_on(async {
        let sink = Arc::new(Discard {
            delivered: AtomicU64::new(0),
        });
        let (context, delivering) = harness::context(sink.clone(), transforms);
        let checkpoints = Arc::new(AtomicU64::new(0));
        let (_stop_tx, stop) = watch::channel(false);
        let rounds = o.records.div_ceil(records.len());
        let per_shard: u64 = records.iter().map(|r| r.len() as u64).sum::<u64>() * rounds as u64;
        // Made before the clock starts: records come from the SDK owned, and
        // copying them here is the harness's work, not the worker's.
        let inputs: Vec<Vec<Read>> = (0..o.shards)
            .map(|_| reads(&records, 0, records.len() * rounds))
            .collect();
        let cpu = process_cpu();
        let wall = Instant::now();
        let mut shards = Vec::new();
        for (s, input) in inputs.into_iter().enumerate() {
            let from_feed = harness::feed(input);
            let resume = Resume {
                shard: format!("shardId-{s:012}"),
                checkpoint: None,
                counters: ShardCounters::default(),
            };
            let lease = MemoryLease {
                checkpoints: checkpoints.clone(),
            };
            shards.push(tokio::spawn(shard::run(
                context.clone(),
                lease,
                resume,
                from_feed,
                stop.clone(),
            )));
        }
        for shard in shards {
            assert_eq!(shard.await.expect("shard task"), ShardExit::Finished);
        }
        let measured = Measured {
            bytes: per_shard * o.shards as u64,
            cpu_ns: process_cpu() - cpu,
            wall: wall.elapsed(),
            documents: sink.delivered.load(Ordering::Relaxed),
            checkpoints: checkpoints.load(Ordering::Relaxed),
        };
        drop(context);
        delivering.await.expect("driver");
        measured
    })
}

fn shards_per_core(bytes: u64, cpu_ns: u64) -> f64 {
    bytes as f64 / (cpu_ns as f64 / 1e9) / SHARD_BYTES_PER_SECOND
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it as a smoke test.
    let o = options();
    let quick = !std::env::args().any(|a| a == "--bench");
    let args: Vec<String> = std::env::args().collect();
    if let Some(seconds) = args
        .windows(2)
        .find(|w| w[0] == "--stalled")
        .map(|w| w[1].parse().expect("seconds"))
    {
        let shards = if args.iter().any(|a| a == "--shards") {
            o.shards
        } else {
            25
        };
        stalled(seconds, shards, o.threads);
        return;
    }
    let o = if quick {
        Options {
            shards: 4,
            records: 20,
            rounds: 1,
            ..o
        }
    } else {
        o
    };
    println!(
        "load harness: {} shards, {} records of {} events per shard, {} runtime threads, \
         floor and logsub alternating, {} rounds",
        o.shards,
        o.records,
        payloads::EVENTS_PER_RECORD,
        o.threads,
        o.rounds
    );
    let kinds = ["vpc-flow", "json"];
    let mut floors = plot::Series {
        name: "floor".into(),
        points: Vec::new(),
    };
    let mut ours_series = plot::Series {
        name: "logsub".into(),
        points: Vec::new(),
    };
    for (i, kind) in kinds.into_iter().enumerate() {
        let records = Arc::new(payloads::records(kind, 50));
        let floor_rounds = (o.records * o.shards / records.len()).max(1);
        let expected = (o.records.div_ceil(records.len())
            * records.len()
            * o.shards
            * payloads::EVENTS_PER_RECORD) as u64;
        let mut last = None;
        let measured = alternate(
            o.rounds,
            || {
                let (bytes, cpu) = floor(&records, floor_rounds);
                shards_per_core(bytes, cpu)
            },
            || {
                let measured = ours(kind, records.clone(), &o);
                assert_eq!(measured.documents, expected, "every event delivered once");
                let logsub = shards_per_core(measured.bytes, measured.cpu_ns);
                last = Some(measured);
                logsub
            },
        );
        let last = last.expect("a round");
        println!(
            "{kind:>8}: floor (inflate + SIMD envelope parse) {:6.1} shards/core | \
             logsub {:6.1} shards/core ({} documents, {} checkpoints, {:.1} s wall a round) | \
             ratio {:.2}",
            measured.baseline.median(),
            measured.ours.median(),
            last.documents,
            last.checkpoints,
            last.wall.as_secs_f64(),
            measured.ratio
        );
        floors.points.push((i as f64, measured.baseline.median()));
        ours_series.points.push((i as f64, measured.ours.median()));
    }
    plot::write_if_asked(&plot::Chart {
        title: &format!(
            "Worker CPU: shards per core at 2 MiB/s ({} shards, {} threads)",
            o.shards, o.threads
        ),
        x_label: "payload (floor: inflate + SIMD envelope parse, one thread)",
        y_label: "shards per core",
        categories: kinds.map(String::from).to_vec(),
        series: vec![floors, ours_series],
    });
}
