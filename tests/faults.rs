//! Fault trials of the search sink, on the stack's fault node (OpenSearch with
//! one write thread, a one-slot queue and 4 KiB of indexing memory, which tests
//! start and stop): an overload answering 429s, whole and per item, an outage
//! of a minute mid-stream, and (restarted with a lowered
//! `http.max_content_length`) requests too large; and a server that refuses
//! bulk requests as a whole. Afterwards every event is present exactly once.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::pipeline::{
    Setup, metric, published, published_health, put, put_at, setup, stop, worker_with_admin,
};
use common::search::create_index;
use common::{eventually, stack, unique};
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

/// A fault node of the stack (`hack/stack.sh fault-node`), on one OpenSearch major.
#[derive(Clone, Copy)]
struct FaultNode {
    /// `2` or `3`.
    major: u8,
}

impl FaultNode {
    fn name(self) -> &'static str {
        if self.major == 3 {
            "fault-node-3"
        } else {
            "fault-node"
        }
    }

    fn url(self) -> String {
        let var = if self.major == 3 {
            "FAULT_SEARCH3_URL"
        } else {
            "FAULT_SEARCH_URL"
        };
        stack().var(var).to_owned()
    }

    /// Starts it (with `settings`, or the overload-prone ones) or stops it.
    fn act(self, action: &str, settings: &[&str]) {
        let mut args = vec!["fault-node", action];
        if self.major == 3 {
            args.push("3");
        }
        args.extend_from_slice(settings);
        common::stack_sh(&args);
    }
}

async fn overload(http: &reqwest::Client, node: FaultNode) {
    let base = &node.url();
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
    common::report(&format!(
        "trial overload-429s on OpenSearch {}: sent {sent}, delivered {sent}, unique {sent}, duplicates 0, \
         dead-lettered 0, lost 0; whole-request 429s {}, items retried after a 429 {}",
        node.major, throttled.0, throttled.1
    ));
    stop(child).await;
    setup.ns.delete().await;
}

async fn outage(http: &reqwest::Client, node: FaultNode) {
    let base = &node.url();
    let (setup, index) = prepare(base).await;
    let (tx, _stdout) = mpsc::unbounded_channel();
    let (child, admin) = worker_with_admin(&setup.config, "worker-1", tx);
    let before = events("a before", 50);
    put(&setup, "a", &before).await;
    each_once(http, base, &index, before.len()).await;

    // Down for a minute while events keep coming.
    node.act("stop", &[]);
    let down = tokio::time::Instant::now();
    let mut during = 0;
    for round in 0..6 {
        let batch = events(&format!("b during {round}"), 25);
        put(&setup, "b", &batch).await;
        during += batch.len();
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    // The workers say so on their leases while it lasts.
    let failing = published(&setup.ns.name, "sinkError", Duration::from_secs(10)).await;
    assert!(failing.starts_with("unavailable"), "{failing}");
    node.act("start", &[]);
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
    common::report(&format!(
        "trial sink-outage on OpenSearch {}: sent {sent}, delivered {sent}, unique {sent}, duplicates 0, \
         dead-lettered 0, lost 0; down {:.1}s, failed deliveries retried {errors}",
        node.major,
        outage.as_secs_f64()
    ));
    stop(child).await;
    setup.ns.delete().await;
}

/// The node takes requests of at most 8 KiB (`http.max_content_length`), and
/// answers 413 to larger ones. Batches are sent again in halves until they
/// fit; the one event too large alone is dead-lettered `too_large`, with its
/// size and its message cut to fit, in the index (no dead-letter index is
/// set). Nothing is dropped, and the lease counts what was stored.
async fn too_large(http: &reqwest::Client, node: FaultNode) {
    let base = &node.url();
    let setup = setup(1, &["a"]).await;
    let index = unique("too-large").to_lowercase();
    create_index(base, &index, 1, json!({})).await;
    setup.configure_batches(
        &format!("{{elasticsearch: {{endpoint: '{base}', index: '{index}'}}}}"),
        "[{json: {}}]",
        "{maxEvents: 500, maxBytes: 1Mi, maxWait: 300ms}",
    );
    let (tx, _stdout) = mpsc::unbounded_channel();
    let (child, admin) = worker_with_admin(&setup.config, "worker-1", tx);
    let mut batch: Vec<String> = (0..60).map(|i| format!(r#"{{"n": {i}}}"#)).collect();
    let big = format!(r#"{{"n": 60, "blob": "{}"}}"#, "x".repeat(20_000));
    batch.insert(30, big);
    put(&setup, "a", &batch).await;
    each_once(http, base, &index, batch.len()).await;
    let letters = dead_letters(http, base, &index).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["@dead_letter"]["reason"], "too_large", "{letter}");
    assert_eq!(letter["@dead_letter"]["status"], 413);
    assert_eq!(letter["@dead_letter"]["truncated"], true);
    let size = letter["@dead_letter"]["size"].as_u64().expect("size");
    assert!(size > 20_000, "the refused document's size: {size}");
    assert!(
        letter["@message"]
            .as_str()
            .is_some_and(|m| m.len() < 8 << 10),
        "its message cut to fit"
    );
    let ns = setup.ns.name.clone();
    let health = eventually("counted on the lease", Duration::from_secs(30), || {
        let ns = ns.clone();
        async move {
            let h = published_health(&ns).await.pop()?;
            (h["delivered"] == 60 && h["deadLettered"] == 1).then_some(h)
        }
    })
    .await;
    assert!(health.get("blocked").is_none(), "{health}");
    let stored = metric(admin, "component_sent_events_total")
        .await
        .unwrap_or(0.0);
    assert_eq!(stored, 60.0, "the dead letter is not counted as delivered");
    common::report(&format!(
        "trial too-large-requests on OpenSearch {}: sent {}, delivered 60, unique 60, duplicates 0, dead-lettered 1, lost 0",
        node.major,
        batch.len()
    ));
    stop(child).await;
    setup.ns.delete().await;
}

/// One test per node, so the trials never share a node at once; held, as
/// other test processes may run beside this one.
async fn overload_outage_and_too_large(node: FaultNode) {
    let _held = common::hold(node.name());
    node.act("start", &[]);
    let http = reqwest::Client::new();
    overload(&http, node).await;
    outage(&http, node).await;
    node.act("start", &["http.max_content_length=8kb"]);
    too_large(&http, node).await;
    node.act("stop", &[]);
}

#[tokio::test]
async fn overload_outage_and_too_large_lose_nothing_and_double_nothing() {
    overload_outage_and_too_large(FaultNode { major: 2 }).await;
}

#[tokio::test]
async fn on_opensearch3_overload_outage_and_too_large_lose_nothing_and_double_nothing() {
    overload_outage_and_too_large(FaultNode { major: 3 }).await;
}

/// A server that answers the bulk request as a whole with a status about no
/// document (here S3's endpoint, answering 405): the delivery is retried
/// and the lease says why; nothing is dropped or checkpointed. Pointed at the
/// right cluster, the worker delivers every event once.
#[tokio::test]
async fn a_whole_request_refusal_is_retried_never_dropped() {
    let setup = setup(1, &["a"]).await;
    let base = stack().var("OPENSEARCH_URL");
    let index = unique("refused").to_lowercase();
    create_index(base, &index, 1, json!({})).await;
    let wrong = stack().var("AWS_ENDPOINT_URL_S3");
    setup.configure(
        &format!("{{elasticsearch: {{endpoint: '{wrong}', index: '{index}'}}}}"),
        "[{json: {}}]",
    );
    let (tx, _stdout) = mpsc::unbounded_channel();
    let (child, _) = worker_with_admin(&setup.config, "worker-1", tx);
    let batch: Vec<String> = (0..20).map(|i| format!(r#"{{"n": {i}}}"#)).collect();
    put(&setup, "a", &batch).await;
    let said = published(&setup.ns.name, "sinkError", Duration::from_secs(60)).await;
    assert!(
        said.starts_with("unexpected_status") && said.contains("405"),
        "{said}"
    );
    // Had they been dropped, the checkpoint would be past them, and the
    // next worker would not find them to deliver.
    stop(child).await;
    setup.configure(
        &format!("{{elasticsearch: {{endpoint: '{base}', index: '{index}'}}}}"),
        "[{json: {}}]",
    );
    let (tx, _stdout) = mpsc::unbounded_channel();
    let (child, _) = worker_with_admin(&setup.config, "worker-2", tx);
    let started = tokio::time::Instant::now();
    each_once(&reqwest::Client::new(), base, &index, batch.len()).await;
    common::report(&format!(
        "trial whole-request-405: sent 20, delivered 20, unique 20, duplicates 0, dead-lettered 0, lost 0, recovery {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    stop(child).await;
    setup.ns.delete().await;
}

/// A CloudTrail line anyone can write to the log group, with an `eventTime`
/// that is no time, in an index that maps it as a date (as the first real
/// event makes it): the document is refused and becomes one dead letter in
/// the same index, at a time the index takes; the shard goes on.
async fn time_that_is_no_time(base: &'static str) {
    let setup = setup(1, &["a"]).await;
    let index = unique("eventtime").to_lowercase();
    let dates = json!({"type": "date"});
    create_index(
        base,
        &index,
        1,
        json!({"properties": {"@timestamp": dates, "eventTime": dates}}),
    )
    .await;
    setup.configure(
        &format!("{{elasticsearch: {{endpoint: '{base}', index: '{index}'}}}}"),
        "[{cloudTrail: {}}]",
    );
    let (tx, _stdout) = mpsc::unbounded_channel();
    let (child, _) = worker_with_admin(&setup.config, "worker-1", tx);
    let event = |n: usize, time: &str| format!(r#"{{"eventTime":"{time}","eventName":"E{n}"}}"#);
    let lines = vec![
        event(0, "2026-11-20T10:00:00Z"),
        event(1, "not a time"),
        event(2, "2026-11-20T10:00:01Z"),
    ];
    put(&setup, "a", &lines).await;
    let http = reqwest::Client::new();
    each_once(&http, base, &index, 3).await;
    let letters = dead_letters(&http, base, &index).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["@dead_letter"]["reason"], "refused", "{letter}");
    assert!(
        letter["@dead_letter"]["document"]
            .as_str()
            .is_some_and(|d| d.contains("not a time")),
        "{letter}"
    );
    let health = published_health(&setup.ns.name).await;
    assert!(
        health.iter().all(|h| h.get("blocked").is_none()),
        "{health:?}"
    );
    stop(child).await;
    setup.ns.delete().await;
}

#[tokio::test]
async fn a_time_that_is_no_time_is_one_dead_letter_and_the_shard_goes_on() {
    time_that_is_no_time(stack().var("OPENSEARCH_URL")).await;
}

#[tokio::test]
async fn on_opensearch3_a_time_that_is_no_time_is_one_dead_letter_and_the_shard_goes_on() {
    time_that_is_no_time(stack().var("OPENSEARCH3_URL")).await;
}

/// How often the lease of the shard that publishes `blocked` was taken.
async fn blocked_takes(ns: &str) -> i32 {
    common::pipeline::leases(ns)
        .await
        .iter()
        .find(|l| {
            l.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("logsub.io/health"))
                .is_some_and(|h| h.contains("\"blocked\""))
        })
        .and_then(|l| l.spec.as_ref()?.lease_transitions)
        .unwrap_or(0)
}

/// A document the index refuses whose dead letter the dead-letter index
/// refuses too (a strict mapping): nothing stores it. Its shard stops at that
/// record, saying so on its lease and in a metric naming shard and record;
/// the other shard goes on delivering, and nothing past the record is
/// checkpointed. Once the dead-letter index takes it, the shard goes on.
async fn record_nothing_stores(base: &'static str) {
    const AFTER: usize = 20;
    let http = reqwest::Client::new();
    let setup = setup(2, &["a", "b", "c", "d", "e", "f"]).await;
    let index = unique("poison").to_lowercase();
    let dead = format!("{index}-dead");
    create_index(
        base,
        &index,
        1,
        json!({"properties": {"n": {"type": "long"}}}),
    )
    .await;
    create_index(
        base,
        &dead,
        1,
        json!({"dynamic": "strict", "properties": {}}),
    )
    .await;
    setup.configure(
        &format!(
            "{{elasticsearch: {{endpoint: '{base}', index: '{index}', deadLetterIndex: '{dead}'}}}}"
        ),
        "[{json: {}}]",
    );
    let (tx, _stdout) = mpsc::unbounded_channel();
    let (child, admin) = worker_with_admin(&setup.config, "worker-1", tx);
    let mut sent = 0;
    for stream in ["a", "b", "c", "d", "e", "f"] {
        let batch: Vec<String> = (0..5)
            .map(|i| format!(r#"{{"n": {i}, "s": "{stream}"}}"#))
            .collect();
        put(&setup, stream, &batch).await;
        sent += batch.len();
    }
    put(&setup, "a", &[r#"{"n": "many", "s": "a"}"#.to_owned()]).await;
    let ns = setup.ns.name.clone();
    let blocked = published(&ns, "blocked", Duration::from_secs(60)).await;
    assert!(
        blocked.contains("the dead-letter index refused the dead letter too"),
        "{blocked}"
    );
    let text = common::pipeline::metrics_text(admin)
        .await
        .expect("metrics");
    let series = text
        .lines()
        .find(|l| l.starts_with("logsub_worker_blocked_shards{"))
        .expect("the blocked shard's series");
    assert!(
        series.ends_with(" 1") && series.contains("sequence=\""),
        "{series}"
    );
    // Events before the poison, on both shards, are all stored.
    let stored = eventually(
        &format!("{sent} documents"),
        Duration::from_secs(60),
        || async {
            let n = common::search::count(base, &index).await;
            (n >= sent as u64).then_some(n)
        },
    )
    .await;
    assert_eq!(stored, sent as u64);
    // More events: the other shard's arrive; the blocked shard's wait. The
    // emulator gives every delivery a random partition key (as AWS does
    // unless the filter distributes by log stream), so each put lands on
    // either shard: with 20 of them, all on the other one is one in a million.
    for i in 0..AFTER {
        let stream = ["a", "b", "c", "d", "e", "f"][i % 6];
        put(
            &setup,
            stream,
            &[format!(r#"{{"n": 9, "s": "{stream}", "after": true}}"#)],
        )
        .await;
    }
    // The blocked shard is taken again (it backs off, then tries the record
    // once more) twice after those puts: one whole try read past the record.
    let tried = blocked_takes(&ns).await;
    eventually(
        "the blocked shard tried again",
        Duration::from_secs(60),
        || {
            let ns = ns.clone();
            async move { (blocked_takes(&ns).await >= tried + 2).then_some(()) }
        },
    )
    .await;
    let after = eventually(
        "the other shard goes on",
        Duration::from_secs(60),
        || async {
            let n = common::search::count(base, &index).await;
            (n > sent as u64).then_some(n)
        },
    )
    .await;
    assert!(
        after < (sent + AFTER) as u64,
        "the blocked shard's events wait: {after}"
    );

    // The dead-letter index takes anything now: the shard goes on.
    http.delete(format!("{base}/{dead}"))
        .send()
        .await
        .expect("delete");
    create_index(base, &dead, 1, json!({})).await;
    let started = tokio::time::Instant::now();
    eventually("everything stored", Duration::from_secs(180), || async {
        let n = common::search::count(base, &index).await;
        let d = common::search::count(base, &dead).await;
        (n == (sent + AFTER) as u64 && d == 1).then_some(())
    })
    .await;
    eventually(
        "the shard no longer blocked",
        Duration::from_secs(30),
        || {
            let ns = ns.clone();
            async move {
                published_health(&ns)
                    .await
                    .iter()
                    .all(|h| h.get("blocked").is_none())
                    .then_some(())
            }
        },
    )
    .await;
    common::report(&format!(
        "trial poison-record: sent {}, delivered {}, unique {}, duplicates 0, dead-lettered 1, lost 0, recovery {:.1}s",
        sent + AFTER + 1,
        sent + AFTER,
        sent + AFTER,
        started.elapsed().as_secs_f64()
    ));
    stop(child).await;
    setup.ns.delete().await;
}

#[tokio::test]
async fn a_record_nothing_stores_stops_only_its_shard() {
    record_nothing_stores(stack().var("OPENSEARCH_URL")).await;
}

#[tokio::test]
async fn on_opensearch3_a_record_nothing_stores_stops_only_its_shard() {
    record_nothing_stores(stack().var("OPENSEARCH3_URL")).await;
}

/// An index that takes no document now (a write block, as ILM sets on
/// yesterday's daily index) refuses every item with 403: that says nothing
/// against the documents, so none is dead-lettered, and nothing else waits
/// for them: late events for that index are retried alone while today's are
/// stored beside them, and the lease says why the whole time. Once the block
/// is lifted each is stored once.
async fn write_blocked_index(base: &'static str) {
    const DAY: i64 = 86_400_000;
    let http = reqwest::Client::new();
    let setup = setup(2, &["a", "b"]).await;
    let prefix = unique("blocked").to_lowercase();
    let daily = |ms: i64| {
        let (y, m, d) = logsub::time::civil_from_days(ms.div_euclid(DAY));
        format!("{prefix}-{y:04}.{m:02}.{d:02}")
    };
    let now = logsub::time::now_millis();
    let (old, today, dead) = (daily(now - DAY), daily(now), format!("{prefix}-dead"));
    create_index(base, &old, 1, json!({})).await;
    block_writes(&http, base, &old, true).await;
    setup.configure(
        &format!(
            "{{elasticsearch: {{endpoint: '{base}', index: '{prefix}-%Y.%m.%d', deadLetterIndex: '{dead}'}}}}"
        ),
        "[{json: {}}]",
    );
    let (tx, _stdout) = mpsc::unbounded_channel();
    let (child, _) = worker_with_admin(&setup.config, "worker-1", tx);
    let late: Vec<String> = (0..5).map(|i| format!(r#"{{"late": {i}}}"#)).collect();
    put_at(&setup, "a", now - DAY, &late).await;
    let said = published(&setup.ns.name, "sinkError", Duration::from_secs(60)).await;
    assert!(
        said.starts_with("unwritable") && said.contains("cluster_block_exception"),
        "{said}"
    );
    let all_say_why = || async {
        let health = published_health(&setup.ns.name).await;
        let why = |h: &Value| {
            h["sinkError"]
                .as_str()
                .is_some_and(|e| e.starts_with("unwritable"))
        };
        (health.len() == 2 && health.iter().all(why))
            .then_some(())
            .ok_or(health)
    };
    eventually("both leases say why", Duration::from_secs(30), || async {
        all_say_why().await.ok()
    })
    .await;
    for n in 0..10 {
        let stream = ["a", "b"][n % 2];
        put_at(&setup, stream, now, &[format!(r#"{{"n": {n}}}"#)]).await;
        eventually("today's events stored", Duration::from_secs(60), || async {
            (common::search::count(base, &today).await > n as u64).then_some(())
        })
        .await;
        if let Err(health) = all_say_why().await {
            panic!("others stored beside them hide the late ones: {health:?}");
        }
    }
    assert_eq!(
        common::search::count(base, &dead).await,
        0,
        "nothing dead-lettered"
    );
    block_writes(&http, base, &old, false).await;
    let started = tokio::time::Instant::now();
    each_once(&http, base, &old, late.len()).await;
    each_once(&http, base, &today, 10).await;
    eventually("the lease clear", Duration::from_secs(30), || async {
        let health = published_health(&setup.ns.name).await;
        health
            .iter()
            .all(|h| h.get("sinkError").is_none())
            .then_some(())
    })
    .await;
    assert_eq!(common::search::count(base, &dead).await, 0);
    common::report(&format!(
        "trial write-blocked-index: sent 15, delivered 15, unique 15, duplicates 0, dead-lettered 0, lost 0, recovery {:.1}s; 10 stored beside 5 held back",
        started.elapsed().as_secs_f64()
    ));
    stop(child).await;
    setup.ns.delete().await;
}

#[tokio::test]
async fn a_write_blocked_index_holds_back_only_its_own_documents() {
    write_blocked_index(stack().var("OPENSEARCH_URL")).await;
}

#[tokio::test]
async fn on_opensearch3_a_write_blocked_index_holds_back_only_its_own_documents() {
    write_blocked_index(stack().var("OPENSEARCH3_URL")).await;
}

/// The dead letters in `index`.
async fn dead_letters(http: &reqwest::Client, base: &str, index: &str) -> Vec<Value> {
    let found: Value = http
        .post(format!("{base}/{index}/_search"))
        .json(&json!({"query": {"exists": {"field": "@dead_letter"}}}))
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    found["hits"]["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|hit| hit["_source"].clone())
        .collect()
}

/// Sets or lifts `index.blocks.write` on `index`.
async fn block_writes(http: &reqwest::Client, base: &str, index: &str, block: bool) {
    let set = http
        .put(format!("{base}/{index}/_settings"))
        .json(&json!({"index.blocks.write": if block { json!(true) } else { Value::Null }}))
        .send()
        .await
        .expect("block");
    assert!(
        set.status().is_success(),
        "{}",
        set.text().await.unwrap_or_default()
    );
}
