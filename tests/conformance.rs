//! The delivery contract every sink keeps, checked through the sink driver
//! against the stack's real servers: a delivered batch is acknowledged; a
//! failure is retried, and acknowledged only once delivered; a document refused
//! for good is dead-lettered and acknowledged; a driver stopped mid-batch
//! acknowledges nothing it did not deliver.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::search::{count, create_index};
use common::toxiproxy::Proxy;
use common::{eventually, stack, unique};
use logsub::contract::SequenceNumber;
use logsub::contract::UtcHour;
use logsub::contract::config::{ElasticsearchOutput, S3Output};
use logsub::telemetry::WorkerMetrics;
use logsub::worker::document::Document;
use logsub::worker::health::SinkHealth;
use logsub::worker::sink::batch::{Ack, Acked, BatchLimits};
use logsub::worker::sink::driver::{self, DriverHandle, DriverLimits};
use logsub::worker::sink::elasticsearch::Elasticsearch;
use logsub::worker::sink::s3::S3;
use logsub::worker::sink::{Batching, Encoded, Encoder, ObjectMeta, Part, Sink, Span};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const SHARD: &str = "shardId-000000000000";

struct Harness<S> {
    sink: Arc<S>,
    driver: Option<DriverHandle>,
    delivering: JoinHandle<()>,
    acks: mpsc::UnboundedReceiver<Acked>,
    ack_to: mpsc::UnboundedSender<Acked>,
    metrics: Arc<WorkerMetrics>,
    health: Arc<SinkHealth>,
}

fn start<S: Sink>(sink: S) -> Harness<S> {
    let sink = Arc::new(sink);
    let metrics = Arc::new(WorkerMetrics::default());
    let health = Arc::new(SinkHealth::default());
    let limits = DriverLimits::new(BatchLimits::new(100, 1 << 20, Duration::from_millis(50)), 2);
    let (driver, delivering) = driver::spawn(sink.clone(), limits, metrics.clone(), health.clone());
    let (ack_to, acks) = mpsc::unbounded_channel();
    Harness {
        sink,
        driver: Some(driver),
        delivering,
        acks,
        ack_to,
        metrics,
        health,
    }
}

/// Documents stored, and stored as dead letters, of an acknowledged part.
fn stored(acked: &Acked) -> (usize, usize) {
    let stored = acked.result.as_ref().expect("stored");
    (stored.documents, stored.dead_lettered)
}

fn doc(id: &str, extra: Value) -> Document<'static> {
    let mut doc = Document::new();
    doc.insert("@id", json!(id));
    doc.insert("@timestamp", json!("2026-11-25T19:44:28.711Z"));
    doc.insert("@log_group", json!("/conformance"));
    doc.insert("@owner", json!("123456789012"));
    if let Value::Object(fields) = extra {
        for (k, v) in fields {
            doc.insert(k, v);
        }
    }
    doc
}

impl<S: Sink> Harness<S> {
    /// Hands the documents of record `seq` over as one part.
    async fn send(&self, seq: u64, docs: &[Document<'_>]) {
        let mut encoded = Encoded::default();
        for d in docs {
            encoded
                .push(|out| self.sink.encoder().encode(d, out))
                .expect("encode");
        }
        let sequence = SequenceNumber::parse(&seq.to_string()).expect("sequence");
        let ack = Ack {
            to: self.ack_to.clone(),
            shard: SHARD.into(),
            sequence: sequence.clone(),
        };
        let part = if self.sink.batching() == Batching::PerShard {
            let span = Span {
                shard: SHARD.into(),
                first: sequence.clone(),
                last: sequence,
                meta: ObjectMeta {
                    hour: UtcHour::from_unix_millis(1_795_635_868_711),
                    log_group: "/conformance".into(),
                    owner: "123456789012".into(),
                },
                written: None,
            };
            Part::object(encoded, span, Some(ack))
        } else {
            Part::new(encoded, Some(ack))
        };
        let driver = self.driver.as_ref().expect("running");
        let room = driver
            .reserve(part.encoded().byte_len())
            .await
            .expect("room");
        driver.send(part, room).expect("send");
    }

    async fn acked(&mut self, within: Duration) -> Option<Acked> {
        tokio::time::timeout(within, self.acks.recv()).await.ok()?
    }

    /// Stops the driver without waiting for what it holds.
    fn abandon(mut self) -> mpsc::UnboundedReceiver<Acked> {
        self.driver.take();
        self.delivering.abort();
        self.acks
    }
}

fn search_sink(base: &str, index: &str, dead: &str) -> Elasticsearch {
    let config: ElasticsearchOutput = serde_json::from_value(json!({
        "endpoint": base, "index": index, "deadLetterIndex": dead,
    }))
    .expect("config");
    Elasticsearch::new(&config).expect("sink")
}

/// Delivered → acked; refused for good → dead-lettered and acked.
async fn search_delivers_and_dead_letters(base: &str) {
    let index = unique("conf").to_lowercase();
    let dead = format!("{index}-dead");
    create_index(
        base,
        &index,
        1,
        json!({"properties": {"n": {"type": "long"}}}),
    )
    .await;
    let mut h = start(search_sink(base, &index, &dead));
    let good: Vec<Document> = (0..10)
        .map(|i| doc(&format!("good-{i}"), json!({"n": i})))
        .collect();
    h.send(1, &good).await;
    let acked = h.acked(Duration::from_secs(30)).await.expect("acked");
    assert_eq!((acked.sequence.as_str(), stored(&acked)), ("1", (10, 0)));
    assert_eq!(count(base, &index).await, 10);

    h.send(
        2,
        &[
            doc("bad", json!({"n": "many"})),
            doc("fine", json!({"n": 1})),
        ],
    )
    .await;
    let acked = h.acked(Duration::from_secs(30)).await.expect("acked");
    assert_eq!(
        (acked.sequence.as_str(), stored(&acked)),
        ("2", (1, 1)),
        "the refused document counts as dead-lettered, not delivered"
    );
    assert_eq!(count(base, &index).await, 11);
    assert_eq!(count(base, &dead).await, 1);
    assert_eq!(h.metrics.sink_dead_lettered_events.get(), 1);
    assert_eq!(h.metrics.sent_events.get(), 11);
}

#[tokio::test]
async fn opensearch_delivers_and_dead_letters() {
    search_delivers_and_dead_letters(stack().var("OPENSEARCH_URL")).await;
}

#[tokio::test]
async fn opensearch3_delivers_and_dead_letters() {
    search_delivers_and_dead_letters(stack().var("OPENSEARCH3_URL")).await;
}

#[tokio::test]
async fn elasticsearch_delivers_and_dead_letters() {
    search_delivers_and_dead_letters(stack().var("ELASTICSEARCH_URL")).await;
}

/// A search node that is away (behind a proxy that resets every connection;
/// it keeps its port, so nothing else can take it meanwhile): retried, acked
/// only once it is back; a driver stopped while it is away acknowledges
/// nothing and stores nothing.
#[tokio::test]
async fn search_retries_until_delivered_and_abandons_without_acks() {
    let node = stack().var("OPENSEARCH_URL");
    let proxy = Proxy::to_url(node).await;
    let base = proxy.url();
    let index = unique("conf-down").to_lowercase();
    let dead = format!("{index}-dead");
    let away = proxy
        .toxic("reset_peer", "upstream", json!({"timeout": 0}))
        .await;
    let mut h = start(search_sink(&base, &index, &dead));
    h.send(1, &[doc("a", json!({})), doc("b", json!({}))]).await;
    assert!(
        h.acked(Duration::from_secs(3)).await.is_none(),
        "nothing acked while the node is away"
    );
    assert!(
        h.health
            .error()
            .is_some_and(|e| e.starts_with("unavailable")),
        "{:?}",
        h.health.error()
    );
    proxy.heal(&away).await;
    let acked = h
        .acked(Duration::from_secs(60))
        .await
        .expect("acked once back");
    assert_eq!(stored(&acked), (2, 0));
    assert_eq!(count(node, &index).await, 2);
    assert_eq!(h.health.error(), None);

    let other = unique("conf-abandoned").to_lowercase();
    let away = proxy
        .toxic("reset_peer", "upstream", json!({"timeout": 0}))
        .await;
    let h = start(search_sink(&base, &other, &dead));
    h.send(1, &[doc("c", json!({}))]).await;
    eventually("a refused attempt", Duration::from_secs(30), || async {
        h.health.error().map(drop)
    })
    .await;
    let mut acks = h.abandon();
    proxy.heal(&away).await;
    assert!(acks.try_recv().is_err(), "abandoned: no ack");
    assert_eq!(count(node, &other).await, 0, "and nothing stored");
}

async fn s3_client() -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(&stack().aws().await)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

fn s3_sink(client: aws_sdk_s3::Client, bucket: &str) -> S3 {
    let config: S3Output = serde_json::from_value(json!({
        "bucket": bucket, "prefix": "{logGroup}/", "forcePathStyle": true,
    }))
    .expect("config");
    S3::new(client, &config, "us-east-1", "ns", "conformance")
}

async fn keys(client: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    match client.list_objects_v2().bucket(bucket).send().await {
        Ok(listed) => listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Delivered → acked; a missing bucket → retried, acked once it exists; a
/// driver stopped before then acknowledges nothing and writes nothing.
#[tokio::test]
async fn s3_delivers_retries_and_abandons_without_acks() {
    let client = s3_client().await;
    let bucket = unique("conf").to_lowercase();
    let mut h = start(s3_sink(client.clone(), &bucket));
    h.send(7, &[doc("a", json!({})), doc("b", json!({}))]).await;
    assert!(
        h.acked(Duration::from_secs(3)).await.is_none(),
        "no bucket: nothing acked"
    );
    assert!(h.health.error().is_some(), "the failure is reported");
    client
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("bucket");
    let acked = h.acked(Duration::from_secs(30)).await.expect("acked");
    assert_eq!((acked.sequence.as_str(), stored(&acked)), ("7", (2, 0)));
    assert_eq!(
        keys(&client, &bucket).await,
        [format!("conformance/{SHARD}/7.json.gz")]
    );

    let missing = unique("conf-missing").to_lowercase();
    let h = start(s3_sink(client.clone(), &missing));
    h.send(8, &[doc("c", json!({}))]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut acks = h.abandon();
    client
        .create_bucket()
        .bucket(&missing)
        .send()
        .await
        .expect("bucket");
    assert!(acks.try_recv().is_err(), "abandoned: no ack");
    assert!(keys(&client, &missing).await.is_empty(), "and no object");
}
