//! Fault trials through the stack's Toxiproxy, the way production fails: a
//! Kinesis endpoint that accepts and never answers, an API server that stalls
//! under a leader, a slow and narrow link to the search cluster, answers cut
//! mid-body. Each prints one line (sent, delivered, unique, duplicates,
//! dead-lettered, lost, recovery) and fails on a loss or a duplicate.

mod common;

use std::time::Duration;

use common::controller::{identity, start_with};
use common::pipeline::{Delivered, published, published_health, put, setup, stop, worker_with_env};
use common::search::create_index;
use common::toxiproxy::Proxy;
use common::{TestNamespace, eventually, kubeconfig_via, stack, trial, unique};
use serde_json::{Value, json};
use tokio::sync::mpsc;

fn events(from: usize, n: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| format!(r#"{{"n": {i}}}"#))
        .collect()
}

fn markers(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| i.to_string()).collect()
}

/// The `n` of every document of `index` (up to 10,000), once each hit.
async fn indexed(base: &str, index: &str) -> Vec<String> {
    let http = reqwest::Client::new();
    let _ = http.post(format!("{base}/{index}/_refresh")).send().await;
    let found: Value = match http
        .post(format!("{base}/{index}/_search"))
        .json(&json!({"size": 10_000, "query": {"match_all": {}}}))
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => Value::Null,
    };
    found["hits"]["hits"]
        .as_array()
        .map(|hits| {
            hits.iter()
                .filter_map(|h| h["_source"]["n"].as_u64().map(|n| n.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Collects stdout documents until `want` have come, as their `n`.
async fn collect_n(
    rx: &mut mpsc::UnboundedReceiver<Delivered>,
    got: &mut Vec<String>,
    want: usize,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while got.len() < want {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(d)) => got.push(
                d.doc["n"]
                    .as_u64()
                    .map_or_else(String::new, |n| n.to_string()),
            ),
            _ => panic!("only {} of {want} documents arrived", got.len()),
        }
    }
}

/// GetRecords and ListShards go to a Kinesis that accepts the connection and
/// never answers. Each call is abandoned at its deadline and sent again; the
/// shard says on its lease that reading makes no progress; once answers come
/// back, what was put meanwhile is delivered, once.
#[tokio::test]
async fn a_kinesis_that_never_answers_is_reported_then_read_again() {
    let setup = setup(1, &["app"]).await;
    setup.configure("{stdout: {}}", "[{json: {}}]");
    let kinesis = Proxy::to_url(stack().var("AWS_ENDPOINT_URL_KINESIS")).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (child, _) = worker_with_env(
        &setup.config,
        "worker-1",
        tx,
        &[("AWS_ENDPOINT_URL_KINESIS", &kinesis.url())],
    );
    let mut got = Vec::new();
    put(&setup, "app", &events(0, 50)).await;
    collect_n(&mut rx, &mut got, 50).await;

    let stall = kinesis
        .toxic("timeout", "downstream", json!({"timeout": 0}))
        .await;
    put(&setup, "app", &events(50, 50)).await;
    let ns = setup.ns.name.clone();
    let reported = published(&ns, "readError", Duration::from_secs(120)).await;
    assert!(reported.contains("no read has succeeded"), "{reported}");
    assert_eq!(got.len(), 50, "nothing read while Kinesis does not answer");

    kinesis.heal(&stall).await;
    let healed = tokio::time::Instant::now();
    collect_n(&mut rx, &mut got, 100).await;
    let recovery = healed.elapsed();
    let cleared = eventually("the stall cleared", Duration::from_secs(30), || {
        let ns = ns.clone();
        async move {
            let health = published_health(&ns).await;
            health
                .iter()
                .all(|h| h.get("readError").is_none())
                .then_some(())
        }
    });
    cleared.await;
    stop(child).await;
    // Anything printed after the last collected line would be a duplicate.
    while let Ok(d) = rx.try_recv() {
        got.push(
            d.doc["n"]
                .as_u64()
                .map_or_else(String::new, |n| n.to_string()),
        );
    }
    trial("kinesis-never-answers", &markers(0..100), &got, 0, recovery);
    setup.ns.delete().await;
}

/// The leader's API server accepts and never answers. The leader stops
/// acting at its renew deadline, while its renewal still hangs, and only
/// then may the standby lead: never two at once.
#[tokio::test]
async fn a_stalled_api_server_ends_leadership_before_the_standby_takes_over() {
    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    let kubeconfig = identity(&ns).await;
    let api = Proxy::to_url(&stack().api_server()).await;
    let via = kubeconfig_via(&kubeconfig, &format!("https://{}", api.listen));
    let lease = ["--lease-duration", "6s"];
    let mut leader = start_with(&ns, &via, "30s", &lease);
    eventually("the first leads", Duration::from_secs(60), || async {
        (leader.metric("logsub_controller_leader", &[]).await == 1.0).then_some(())
    })
    .await;
    let standby = start_with(&ns, &kubeconfig, "30s", &lease);
    eventually("the standby waits", Duration::from_secs(30), || async {
        (standby.metric("logsub_controller_leader", &[]).await == 0.0).then_some(())
    })
    .await;

    let stalled = tokio::time::Instant::now();
    api.toxic("timeout", "downstream", json!({"timeout": 0}))
        .await;
    api.toxic("timeout", "upstream", json!({"timeout": 0}))
        .await;
    let stopped = loop {
        if let Some(status) = leader.child.try_wait().expect("wait") {
            break (status, stalled.elapsed());
        }
        assert!(
            stalled.elapsed() < Duration::from_secs(30),
            "the stalled leader is still running"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took_over = eventually("the standby leads", Duration::from_secs(60), || async {
        (standby.metric("logsub_controller_leader", &[]).await == 1.0).then(|| stalled.elapsed())
    })
    .await;
    assert!(
        !stopped.0.success(),
        "it gives up leading and exits: {:?}",
        stopped.0
    );
    assert!(
        stopped.1 < took_over,
        "the old leader stopped ({:?}) before the standby led ({took_over:?})",
        stopped.1
    );
    // Two thirds of the 6 s lease, and a renewal period.
    assert!(stopped.1 < Duration::from_secs(8), "{:?}", stopped.1);
    common::report(&format!(
        "trial api-server-stalls-under-the-leader: leader stopped after {:.1}s, standby led after {:.1}s; never two leaders",
        stopped.1.as_secs_f64(),
        took_over.as_secs_f64()
    ));
    drop(standby);
    ns.delete().await;
}

async fn search_trial(name: &str, toxics: &[(&str, &str, Value)], heal_after: Option<usize>) {
    let setup = setup(2, &["a", "b"]).await;
    let base = stack().var("OPENSEARCH_URL");
    let index = unique(name).to_lowercase();
    create_index(base, &index, 1, json!({})).await;
    let search = Proxy::to_url(base).await;
    setup.configure_batches(
        &format!(
            "{{elasticsearch: {{endpoint: '{}', index: '{index}'}}}}",
            search.url()
        ),
        "[{json: {}}]",
        "{maxEvents: 20, maxBytes: 64Ki, maxWait: 200ms}",
    );
    let mut added = Vec::new();
    for (kind, stream, attributes) in toxics {
        added.push(search.toxic(kind, stream, attributes.clone()).await);
    }
    let (tx, _stdout) = mpsc::unbounded_channel();
    let (child, _) = worker_with_env(&setup.config, "worker-1", tx, &[]);
    let sent = 400;
    for (i, stream) in ["a", "b"].iter().enumerate() {
        put(&setup, stream, &events(i * 200, 200)).await;
    }
    let started = tokio::time::Instant::now();
    if let Some(after) = heal_after {
        // Nothing gets through while the toxics last; then it all does.
        tokio::time::sleep(Duration::from_secs(u64::try_from(after).unwrap())).await;
        assert!(
            indexed(base, &index).await.len() < sent,
            "held back by the toxics"
        );
        for toxic in &added {
            search.heal(toxic).await;
        }
    }
    let healed = tokio::time::Instant::now();
    let got = eventually(
        &format!("{sent} documents"),
        Duration::from_secs(300),
        || async {
            let got = indexed(base, &index).await;
            (got.len() >= sent).then_some(got)
        },
    )
    .await;
    let recovery = if heal_after.is_some() {
        healed.elapsed()
    } else {
        started.elapsed()
    };
    stop(child).await;
    trial(name, &markers(0..sent), &got, 0, recovery);
    setup.ns.delete().await;
}

/// A slow, narrow link to the search cluster: half a second each way and
/// 32 KiB/s. Delivery is slower, and complete.
#[tokio::test]
async fn a_slow_narrow_sink_delivers_everything_once() {
    search_trial(
        "slow-narrow-sink",
        &[
            (
                "latency",
                "downstream",
                json!({"latency": 500, "jitter": 100}),
            ),
            ("bandwidth", "upstream", json!({"rate": 32})),
        ],
        None,
    )
    .await;
}

/// Every answer of the search cluster is cut after 64 bytes: the bulk
/// requests were carried out, but their results never arrive. They are sent
/// again until the answers come through; `create` with `_id` stores each
/// event once.
#[tokio::test]
async fn answers_cut_mid_body_are_sent_again_and_stored_once() {
    search_trial(
        "answers-cut-mid-body",
        &[("limit_data", "downstream", json!({"bytes": 64}))],
        Some(15),
    )
    .await;
}

/// Every object of `bucket`: (key, last record, the `n` of its documents).
async fn objects(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<(String, String, Vec<String>)> {
    common::s3::objects(s3, bucket)
        .await
        .into_iter()
        .map(|o| {
            let ns = o
                .docs
                .iter()
                .map(|d| d["n"].as_u64().map_or_else(String::new, |n| n.to_string()))
                .collect();
            (o.key, o.last.unwrap_or_default(), ns)
        })
        .collect()
}

/// A worker whose API server stalls while it writes objects: its renewals
/// hang, it stops its shards at their renew deadline and abandons what it had
/// not sent; another worker takes the shards once their leases expire. Each
/// object is written once, from a record no other object starts at, and no
/// two objects of a shard overlap: every event is in S3 exactly once.
#[tokio::test]
async fn a_worker_cut_off_from_its_api_server_leaves_no_overlapping_objects() {
    let s3 = common::s3::client().await;
    let bucket = unique("takeover").to_lowercase();
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("bucket");
    let setup = setup(2, &["a", "b"]).await;
    setup.configure_batches(
        &format!("{{s3: {{bucket: {bucket}, prefix: 'objects/', forcePathStyle: true}}}}"),
        "[{json: {}}]",
        "{maxEvents: 7, maxWait: 100ms}",
    );
    let api = Proxy::to_url(&stack().api_server()).await;
    let via = kubeconfig_via(&stack().kubeconfig(), &format!("https://{}", api.listen));
    let (tx, _stdout) = mpsc::unbounded_channel();
    let (first, _) = worker_with_env(
        &setup.config,
        "worker-1",
        tx,
        &[("KUBECONFIG", via.to_str().expect("path"))],
    );
    let sent = 600;
    let producer = {
        let (logs, group) = (setup.logs.clone(), setup.group.clone());
        tokio::spawn(async move {
            for round in 0..30 {
                for (s, stream) in ["a", "b"].iter().enumerate() {
                    let from = round * 20 + s * 10;
                    let batch: Vec<_> = events(from, 10)
                        .into_iter()
                        .enumerate()
                        .map(|(i, m)| {
                            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                                .timestamp(logsub::time::now_millis() + i64::try_from(i).unwrap())
                                .message(m)
                                .build()
                                .unwrap()
                        })
                        .collect();
                    logs.put_log_events()
                        .log_group_name(&group)
                        .log_stream_name(*stream)
                        .set_log_events(Some(batch))
                        .send()
                        .await
                        .expect("put");
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    // Cut off mid-stream, while objects are being written.
    eventually("objects written", Duration::from_secs(60), || async {
        (objects(&s3, &bucket).await.len() >= 4).then_some(())
    })
    .await;
    api.toxic("timeout", "downstream", json!({"timeout": 0}))
        .await;
    api.toxic("timeout", "upstream", json!({"timeout": 0}))
        .await;
    let cut = tokio::time::Instant::now();
    let (tx, _stdout) = mpsc::unbounded_channel();
    let (second, _) = worker_with_env(&setup.config, "worker-2", tx, &[]);
    producer.await.expect("producer");
    let ns = setup.ns.name.clone();
    eventually(
        "the other worker holds both shards",
        Duration::from_secs(60),
        || {
            let ns = ns.clone();
            async move {
                let holders = common::pipeline::holders(&ns).await;
                (holders.get("worker-2") == Some(&2)).then_some(())
            }
        },
    )
    .await;
    let got = eventually(
        &format!("{sent} events in S3"),
        Duration::from_secs(120),
        || async {
            let all: Vec<String> = objects(&s3, &bucket)
                .await
                .into_iter()
                .flat_map(|(_, _, ns)| ns)
                .collect();
            (all.len() >= sent).then_some(all)
        },
    )
    .await;
    let recovery = cut.elapsed();
    stop(second).await;
    drop(first);
    // No two objects of a shard cover the same records.
    let mut by_shard: std::collections::BTreeMap<String, Vec<(u128, u128)>> = Default::default();
    for (key, last, _) in objects(&s3, &bucket).await {
        let (shard, name) = key
            .trim_start_matches("objects/")
            .split_once('/')
            .expect("shard/first");
        let first: u128 = name.trim_end_matches(".json.gz").parse().expect("first");
        let last: u128 = last.parse().expect("last");
        by_shard
            .entry(shard.to_owned())
            .or_default()
            .push((first, last));
    }
    for (shard, mut ranges) in by_shard {
        ranges.sort_unstable();
        for w in ranges.windows(2) {
            assert!(w[0].1 < w[1].0, "{shard}: objects overlap: {w:?}");
        }
    }
    trial(
        "api-server-cut-off-mid-objects",
        &markers(0..sent),
        &got,
        0,
        recovery,
    );
    setup.ns.delete().await;
}

/// The controller's AWS endpoint (CloudWatch Logs, Kinesis, and STS, where it
/// assumes the LogSubscription's role) accepts and never answers. Each call,
/// the role's AssumeRole included, is abandoned at its deadline; the status
/// says AWS does not answer, to be retried, and claims nothing; once answers
/// come back the filter is put without any change to the LogSubscription.
#[tokio::test]
async fn an_aws_that_never_answers_the_controller_is_shown_then_synced() {
    use common::controller::{condition, create, delete_all, filters, log_group, wait_for};

    let client = stack().kube().await;
    common::install_crd(&client).await;
    let ns = TestNamespace::new(&client).await;
    let aws = stack().aws().await;
    let endpoint = stack().var("AWS_ENDPOINT_URL_KINESIS").to_owned();
    let sts = aws.to_builder().endpoint_url(&endpoint).build();
    let run = unique("stall");
    let role = format!("arn:aws:iam::444444444444:role/logsub-{run}");
    let assumed = logsub::aws::assuming(&aws, &sts, &role, None, "logsub-tests").await;
    let logs = aws_sdk_cloudwatchlogs::Client::new(&assumed);
    let group = format!("/{run}/app");
    log_group(&logs, &group, "s").await;
    let arn = common::stream_named(&aws_sdk_kinesis::Client::new(&assumed), &run, 1).await;

    let proxy = Proxy::to_url(&endpoint).await;
    // Neither requests nor answers pass, and no connection is closed.
    let stalls = [
        proxy
            .toxic("timeout", "upstream", json!({"timeout": 0}))
            .await,
        proxy
            .toxic("timeout", "downstream", json!({"timeout": 0}))
            .await,
    ];
    let via = proxy.url();
    let controller = start_with(
        &ns,
        &identity(&ns).await,
        "30s",
        &["--aws-endpoint-url", &via],
    );
    let mut spec = common::controller::without_workers(
        "app",
        json!({"names": [group]}),
        json!({"existing": {"name": run}}),
    );
    spec["spec"]["aws"] = json!({"roleArn": role});
    create(&ns, spec).await;

    let (reason, shown) = wait_for(
        &ns,
        "app",
        "the stall shown",
        Duration::from_secs(120),
        |l| {
            let (status, reason) = condition(l, "StreamReady")?;
            (status != "True").then(|| (reason, l.clone()))
        },
    )
    .await;
    assert_eq!(
        reason, "AwsUnavailable",
        "an AWS that does not answer is retried, not a failure to wait out: {:?}",
        shown.status
    );
    assert_ne!(condition(&shown, "Ready").map(|c| c.0), Some("True".into()));
    assert!(filters(&logs, &group).await.is_empty());

    for stall in &stalls {
        proxy.heal(stall).await;
    }
    let healed = std::time::Instant::now();
    wait_for(
        &ns,
        "app",
        "synced once AWS answers",
        Duration::from_secs(180),
        |l| (condition(l, "SubscriptionFilterReady")?.0 == "True").then_some(()),
    )
    .await;
    let on_group = filters(&logs, &group).await;
    assert_eq!(
        on_group
            .get(&format!("logsub/{}/app", ns.name))
            .map(|f| &f.1),
        Some(&arn),
        "{on_group:?}"
    );
    common::report(&format!(
        "trial aws-never-answers-controller: synced {} s after AWS answered again",
        healed.elapsed().as_secs()
    ));
    delete_all(&ns).await;
    assert!(filters(&logs, &group).await.is_empty());
    drop(controller);
    ns.delete().await;
}
