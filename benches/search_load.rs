//! Delivery into the local OpenSearch nodes (2.x, then 3.x): documents per
//! second the worker's shard path sustains (decode, transforms, encoding,
//! batching, bulk requests, acknowledgements, checkpoints) next to the
//! ceiling a plain bulk loader reaches against the same node in the same
//! run, with the same documents, batch size, concurrency and compression. Needs the stack
//! (`hack/stack.sh up`, then `eval "$(hack/stack.sh env)"`).
//!
//!     cargo bench --bench search_load [-- --shards 16 --records 50 --rounds 5]
//!
//! The loader and the worker take turns `--rounds` times; the median ratio is
//! reported with its spread.

mod harness;
mod payloads;
mod ratio;
#[path = "../tests/common/search.rs"]
mod search;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use harness::MemoryLease;
use logsub::aws::kinesis::Record;
use logsub::contract::SequenceNumber;
use logsub::contract::config::ElasticsearchOutput;
use logsub::worker::decode::cloudwatch::Limits;
use logsub::worker::health::ShardCounters;
use logsub::worker::process::{Outcome, process};
use logsub::worker::shard::{self, Resume, ShardExit};
use logsub::worker::sink::elasticsearch::Elasticsearch;
use logsub::worker::sink::{Encoded, Encoder, Sink};
use logsub::worker::source::kinesis::reader::Read;
use ratio::Spread;
use search::{count, create_index};
use serde_json::{Value, json};
use tokio::sync::watch;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONCURRENCY: u32 = 4;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == name)
        .map_or(default, |w| w[1].parse().expect("a number"))
}

fn output(base: &str, index: &str) -> ElasticsearchOutput {
    serde_json::from_value(json!({
        "endpoint": base, "index": index, "concurrency": CONCURRENCY, "compress": true,
    }))
    .expect("sink config")
}

/// The worker's shard path, `shards` shards each fed `records`.
async fn worker(base: &str, index: &str, shards: &[Arc<Vec<Vec<u8>>>]) -> Duration {
    let sink = Arc::new(Elasticsearch::new(&output(base, index)).expect("sink"));
    let (context, delivering) = harness::context(sink, payloads::transforms("vpc-flow"));
    let (_stop_tx, stop) = watch::channel(false);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (s, records) in shards.iter().enumerate() {
        let batch: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, data)| Record {
                sequence: SequenceNumber::parse(&(i + 1).to_string()).expect("sequence"),
                data: data.clone(),
                arrival_millis: None,
            })
            .collect();
        let reads = harness::feed(vec![Read::Records {
            records: batch,
            millis_behind_latest: Some(0),
        }]);
        let resume = Resume {
            shard: format!("shardId-{s:012}"),
            checkpoint: None,
            counters: ShardCounters::default(),
        };
        tasks.push(tokio::spawn(shard::run(
            context.clone(),
            MemoryLease::default(),
            resume,
            reads,
            stop.clone(),
        )));
    }
    for task in tasks {
        assert_eq!(task.await.expect("shard"), ShardExit::Finished);
    }
    let took = started.elapsed();
    drop(context);
    delivering.await.expect("driver");
    took
}

/// Bulk bodies of the same documents, cut and compressed as the worker does.
fn bodies(base: &str, index: &str, shards: &[Arc<Vec<Vec<u8>>>]) -> Vec<Vec<u8>> {
    let sink = Elasticsearch::new(&output(base, index)).expect("sink");
    let transforms = payloads::transforms("vpc-flow");
    let max = usize::try_from(logsub::api::BatchSpec::default().max_events).expect("events");
    let mut bodies = Vec::new();
    let (mut body, mut in_body) = (Encoded::default(), 0);
    for (s, records) in shards.iter().enumerate() {
        for (i, data) in records.iter().enumerate() {
            let record = Record {
                sequence: SequenceNumber::parse(&(i + 1).to_string()).expect("sequence"),
                data: data.clone(),
                arrival_millis: None,
            };
            let Outcome::Documents(docs) = process(
                &format!("shardId-{s:012}"),
                &record,
                &transforms,
                Limits::default(),
                std::time::Duration::from_secs(10),
            ) else {
                panic!("documents");
            };
            for doc in docs {
                body.push(|out| sink.encoder().encode(&doc, out))
                    .expect("encode");
                in_body += 1;
                if in_body == max {
                    bodies.push(std::mem::take(&mut body));
                    in_body = 0;
                }
            }
        }
    }
    if in_body > 0 {
        bodies.push(body);
    }
    bodies
        .into_iter()
        .map(|b| {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(b.as_bytes()).expect("gzip");
            gz.finish().expect("gzip")
        })
        .collect()
}

/// A plain loader: the bodies, `CONCURRENCY` at a time.
async fn loader(http: &reqwest::Client, base: &str, bodies: Arc<Vec<Vec<u8>>>) -> Duration {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (http, base, bodies, next) =
            (http.clone(), base.to_owned(), bodies.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(body) = bodies.get(i) else { return };
                let answer: Value = http
                    .post(format!("{base}/_bulk"))
                    .header("content-type", "application/x-ndjson")
                    .header("content-encoding", "gzip")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("bulk")
                    .json()
                    .await
                    .expect("bulk json");
                assert_eq!(answer["errors"], false, "the loader's bulk failed");
            }
        }));
    }
    for task in tasks {
        task.await.expect("loader");
    }
    started.elapsed()
}

fn main() {
    logsub::install_crypto_provider();
    let nodes: Vec<(&str, String)> = [
        ("OpenSearch 2", "OPENSEARCH_URL"),
        ("OpenSearch 3", "OPENSEARCH3_URL"),
    ]
    .into_iter()
    .map(|(name, var)| {
        let url = std::env::var(var)
            .unwrap_or_else(|_| panic!("{var}: start the stack and eval \"$(hack/stack.sh env)\""));
        (name, url)
    })
    .collect();
    let quick = !std::env::args().any(|a| a == "--bench");
    let shards = arg("--shards", if quick { 2 } else { 16 });
    let per_shard = arg("--records", if quick { 5 } else { 50 });
    let rounds = arg("--rounds", if quick { 1 } else { 5 });
    let records: Vec<Arc<Vec<Vec<u8>>>> = (0..shards)
        .map(|s| Arc::new(payloads::records_from("vpc-flow", per_shard, s * per_shard)))
        .collect();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    for (name, base) in &nodes {
        runtime.block_on(measure(name, base, &records, rounds));
    }
}

/// The loader and the worker in turns against one node.
async fn measure(name: &str, base: &str, records: &[Arc<Vec<Vec<u8>>>], rounds: usize) {
    let documents =
        (records.iter().map(|r| r.len()).sum::<usize>() * payloads::EVENTS_PER_RECORD) as u64;
    let http = reqwest::Client::new();
    let run = std::process::id();
    // Warm the node's JIT first: its first run is far slower than the rest.
    let warm = format!("bench-loader-{run}-warm");
    create_index(base, &warm, 1, json!({})).await;
    loader(&http, base, Arc::new(bodies(base, &warm, records))).await;
    let (mut loaders, mut workers, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let index = format!("bench-loader-{run}-{round}");
        create_index(base, &index, 1, json!({})).await;
        let bodies = Arc::new(bodies(base, &index, records));
        let took = loader(&http, base, bodies).await;
        assert_eq!(count(base, &index).await, documents);
        loaders.push(documents as f64 / took.as_secs_f64());

        let index = format!("bench-worker-{run}-{round}");
        create_index(base, &index, 1, json!({})).await;
        let took = worker(base, &index, records).await;
        assert_eq!(count(base, &index).await, documents);
        workers.push(documents as f64 / took.as_secs_f64());
        ratios.push(workers[round] / loaders[round]);
    }
    let (loader, logsub) = (Spread::of(loaders), Spread::of(workers));
    println!(
        "into {name}, {documents} VPC flow documents a run, {CONCURRENCY} requests at once: \
         plain bulk loader {:.0} docs/s | logsub worker {:.0} docs/s | ratio {:.2}",
        loader.median(),
        logsub.median(),
        Spread::of(ratios)
    );
    for index in ["bench-loader", "bench-worker"] {
        let _ = http.delete(format!("{base}/{index}-{run}-*")).send().await;
    }
}
