//! Fault trials of the search sink, on the stack's fault node (OpenSearch with
//! one write thread, a one-slot queue and 4 KiB of indexing memory, which tests
//! start and stop): an overload answering 429s, whole and per item, and an
//! outage of a minute mid-stream. Afterwards every event is present exactly once.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::pipeline::{Setup, metric, published_health, put, setup, stop, worker_with_admin};
use common::search::create_index;
use common::{eventually, fault_node, stack, unique};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Waits until `index` holds `want` documents, and checks they are `want`
/// different events: none missing, none twice.
async fn each_once(http: &reqwest::Client, base: &str, index: &str, want: usize) {
    let deadline = Duration::from_secs(180);
    let ids: Vec<String> = eventually(
        &format!("{want} documents in {index}"),
        deadline,
        || async {
            http.post(format!("{base}/{index}/_refresh"))
                .send()
                .await
                .ok()?;
            let found: Value = http
                .post(format!("{base}/{index}/_search"))
                .json(&json!({"size": 10_000, "_source": false, "query": {"match_all": {}}}))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let hits = found["hits"]["hits"].as_array()?;
            (hits.len() >= want).then(|| {
                hits.iter()
                    .filter_map(|h| h["_id"].as_str().map(str::to_owned))
                    .collect()
            })
        },
    )
    .await;
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (want, want), "each event once");
}

async fn prepare(base: &str) -> (Setup, String) {
    let setup = setup(2, &["a", "b", "c"]).await;
    let index = unique("faults").to_lowercase();
    // Three shards: a bulk request fans out into three shard writes that
    // compete for the one write thread, so items fail alone inside a 200.
    create_index(base, &index, 3, json!({})).await;
    // Small batches, four at once: each fits the node's 4 KiB, together they do not.
    setup.configure_batches(
        &format!("{{elasticsearch: {{endpoint: '{base}', index: '{index}', concurrency: 4}}}}"),
        "[]",
        "{maxEvents: 8, maxBytes: 2Ki, maxWait: 100ms}",
    );
    (setup, index)
}

fn events(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix} event {i}")).collect()
}

async fn overload(http: &reqwest::Client, base: &str) {
    let (setup, index) = prepare(base).await;
    let (tx, _stdout) = mpsc::unbounded_channel();
    let (child, admin) = worker_with_admin(&setup.config, "worker-1", tx);
    let mut sent = 0;
    for stream in ["a", "b", "c"] {
        let batch = events(stream, 100);
        put(&setup, stream, &batch).await;
        sent += batch.len();
    }
    each_once(http, base, &index, sent).await;
    let throttled = eventually("429s counted", Duration::from_secs(10), || async {
        let whole = metric(
            admin,
            "logsub_worker_sink_errors_total{error_type=\"throttled\"}",
        )
        .await
        .unwrap_or(0.0);
        let items = metric(admin, "logsub_worker_sink_retried_events_total")
            .await
            .unwrap_or(0.0);
        let delivered = metric(admin, "component_sent_events_total").await?;
        (delivered == sent as f64).then_some((whole, items))
    })
    .await;
    assert!(
        throttled.0 > 0.0 && throttled.1 > 0.0,
        "the node answered both kinds of 429: {throttled:?}"
    );
    assert_eq!(
        metric(admin, "logsub_worker_sink_dead_lettered_events_total").await,
        Some(0.0)
    );
    eprintln!(
        "overload: sent {sent}, delivered {sent} ({sent} unique, 0 duplicates), dead-lettered 0, \
         whole-request 429s {}, items retried after a 429 {}",
        throttled.0, throttled.1
    );
    stop(child).await;
    setup.ns.delete().await;
}

async fn outage(http: &reqwest::Client, base: &str) {
    let (setup, index) = prepare(base).await;
    let (tx, _stdout) = mpsc::unbounded_channel();
    let (child, admin) = worker_with_admin(&setup.config, "worker-1", tx);
    let before = events("a before", 50);
    put(&setup, "a", &before).await;
    each_once(http, base, &index, before.len()).await;

    // Down for a minute while events keep coming.
    fault_node("stop");
    let down = tokio::time::Instant::now();
    let mut during = 0;
    for round in 0..6 {
        let batch = events(&format!("b during {round}"), 25);
        put(&setup, "b", &batch).await;
        during += batch.len();
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    // The workers say so on their leases while it lasts.
    let ns = setup.ns.name.clone();
    let failing = eventually("the sink error on a lease", Duration::from_secs(10), || {
        let ns = ns.clone();
        async move {
            published_health(&ns)
                .await
                .into_iter()
                .find_map(|h| h["sinkError"].as_str().map(str::to_owned))
        }
    })
    .await;
    assert!(failing.starts_with("unavailable"), "{failing}");
    fault_node("start");
    let outage = down.elapsed();
    let after = events("c after", 50);
    put(&setup, "c", &after).await;

    let sent = before.len() + during + after.len();
    each_once(http, base, &index, sent).await;
    eventually("the backlog drained", Duration::from_secs(30), || async {
        let delivered = metric(admin, "component_sent_events_total").await?;
        (delivered == sent as f64).then_some(())
    })
    .await;
    let errors = metric(
        admin,
        "logsub_worker_sink_errors_total{error_type=\"unavailable\"}",
    )
    .await
    .unwrap_or(0.0);
    eprintln!(
        "outage of {outage:?}: sent {sent}, delivered {sent} ({sent} unique, 0 duplicates), \
         dead-lettered 0, failed deliveries retried {errors}"
    );
    stop(child).await;
    setup.ns.delete().await;
}

/// One test, so the two trials never share the node at once.
#[tokio::test]
async fn overload_and_outage_lose_nothing_and_double_nothing() {
    fault_node("start");
    let http = reqwest::Client::new();
    let base = stack().var("FAULT_SEARCH_URL").to_owned();
    overload(&http, &base).await;
    outage(&http, &base).await;
    fault_node("stop");
}
