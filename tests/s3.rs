//! The S3 sink end to end against the stack's SeaweedFS: CloudWatch Logs →
//! Kinesis → `logsub worker` → NDJSON objects under deterministic keys, each
//! written once.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::pipeline::{
    forget_checkpoints, metric, published, put, setup, stop, worker_with_admin,
};
use common::{eventually, unique};
use serde_json::Value;
use tokio::sync::mpsc;

/// Every object of the bucket: key → its documents.
async fn objects(s3: &aws_sdk_s3::Client, bucket: &str) -> BTreeMap<String, Vec<Value>> {
    common::s3::objects(s3, bucket)
        .await
        .into_iter()
        .map(|o| {
            assert_eq!(o.encoding.as_deref(), Some("gzip"), "{}", o.key);
            (o.key, o.docs)
        })
        .collect()
}

#[tokio::test]
async fn objects_hold_every_event_once_and_a_replay_finds_the_same_objects() {
    let s3 = common::s3::client().await;
    let bucket = unique("logsub").to_lowercase();
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("bucket");
    let setup = setup(2, &["a", "b"]).await;
    let sink = format!(
        "{{s3: {{bucket: {bucket}, prefix: '{{logGroup}}/year=%Y/month=%m/day=%d/', forcePathStyle: true}}}}"
    );
    setup.configure_batches(&sink, "[{json: {}}]", "{maxWait: 300ms}");
    let (tx, _stdout) = mpsc::unbounded_channel();
    let (child, admin) = worker_with_admin(&setup.config, "worker-1", tx);
    let mut sent = Vec::new();
    for round in 0..3 {
        for stream in ["a", "b"] {
            let batch: Vec<String> = (0..10)
                .map(|i| format!(r#"{{"stream": "{stream}", "n": {}}}"#, round * 10 + i))
                .collect();
            put(&setup, stream, &batch).await;
            sent.extend(batch);
        }
        // Gaps between rounds: time cuts the objects.
        eventually("the round delivered", Duration::from_secs(30), || async {
            let delivered = metric(admin, "component_sent_events_total").await?;
            (delivered >= sent.len() as f64).then_some(())
        })
        .await;
    }
    let first = objects(&s3, &bucket).await;
    let docs: Vec<&Value> = first.values().flatten().collect();
    assert_eq!(docs.len(), sent.len(), "every event once");
    let ids: HashSet<&str> = docs.iter().filter_map(|d| d["@id"].as_str()).collect();
    assert_eq!(ids.len(), sent.len());
    let group = setup.group.trim_start_matches('/');
    for (key, docs) in &first {
        let time = docs[0]["@timestamp"].as_str().expect("@timestamp");
        let partition = format!(
            "{group}/year={}/month={}/day={}/",
            &time[..4],
            &time[5..7],
            &time[8..10]
        );
        let rest = key
            .strip_prefix(&partition)
            .unwrap_or_else(|| panic!("{key} under {partition}"));
        let (shard, name) = rest.split_once('/').expect("shard directory");
        assert!(shard.starts_with("shardId-"), "{key}");
        // Named by its first record; its last in its metadata.
        let from = name.strip_suffix(".json.gz").expect(".json.gz");
        let head = s3
            .head_object()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .expect("head");
        let to = head
            .metadata()
            .and_then(|m| m.get("logsub-last"))
            .expect("the last record in the metadata");
        assert!(
            from.parse::<u128>().expect("first") <= to.parse::<u128>().expect("last"),
            "{key}"
        );
        // Parsed by the json transform, in stream order within the object.
        for stream in ["a", "b"] {
            let ns: Vec<i64> = docs
                .iter()
                .filter(|d| d["stream"] == stream)
                .map(|d| d["n"].as_i64().expect("n"))
                .collect();
            assert!(ns.windows(2).all(|w| w[0] < w[1]), "{key}: {ns:?}");
        }
    }
    assert!(first.len() >= 3, "objects cut by time: {:?}", first.keys());
    stop(child).await;

    // Forget the checkpoints and replay the stream with other batch limits:
    // each shard's batches are cut where its objects ended, so the replay
    // finds each object written and adds none.
    forget_checkpoints(&setup.ns.name).await;
    setup.configure_batches(&sink, "[{json: {}}]", "{maxEvents: 3, maxWait: 50ms}");
    let (tx, _stdout) = mpsc::unbounded_channel();
    let (again, admin) = worker_with_admin(&setup.config, "worker-2", tx);
    eventually("the replay delivered", Duration::from_secs(60), || async {
        let delivered = metric(admin, "component_sent_events_total").await?;
        (delivered == sent.len() as f64).then_some(())
    })
    .await;
    stop(again).await;
    let second = objects(&s3, &bucket).await;
    assert_eq!(
        second.keys().collect::<Vec<_>>(),
        first.keys().collect::<Vec<_>>(),
        "the same objects, no more"
    );
    assert_eq!(second, first, "with the same documents");

    // Objects under the keys of earlier releases (`<first>-<last>`): a replay
    // finds them and writes none of their records again.
    let mut legacy = BTreeMap::new();
    for o in common::s3::objects(&s3, &bucket).await {
        let last = o.last.expect("logsub-last");
        let old = o.key.replace(".json.gz", &format!("-{last}.json.gz"));
        s3.copy_object()
            .bucket(&bucket)
            .copy_source(format!("{bucket}/{}", o.key))
            .key(&old)
            .send()
            .await
            .expect("copy");
        s3.delete_object()
            .bucket(&bucket)
            .key(&o.key)
            .send()
            .await
            .expect("delete");
        legacy.insert(old, o.docs);
    }
    let replay = |name: &'static str| {
        let (setup, sent) = (&setup, sent.len() as f64);
        async move {
            forget_checkpoints(&setup.ns.name).await;
            let (tx, _stdout) = mpsc::unbounded_channel();
            let (child, admin) = worker_with_admin(&setup.config, name, tx);
            (child, admin, sent)
        }
    };
    let (third, admin, want) = replay("worker-3").await;
    eventually(
        "the replay over old keys",
        Duration::from_secs(60),
        || async {
            let delivered = metric(admin, "component_sent_events_total").await?;
            (delivered == want).then_some(())
        },
    )
    .await;
    stop(third).await;
    let after = objects(&s3, &bucket).await;
    assert!(after == legacy, "no object added: {:?}", after.keys());

    // An object logsub did not write where one of its own goes: the sink
    // says so on the status and waits; moved away, delivery goes on.
    for key in legacy.keys() {
        s3.delete_object()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .expect("delete");
    }
    let taken = first.keys().next().expect("an object").clone();
    s3.put_object()
        .bucket(&bucket)
        .key(&taken)
        .body(b"not ours".to_vec().into())
        .send()
        .await
        .expect("put");
    let (fourth, _, _) = replay("worker-4").await;
    let said = published(&setup.ns.name, "sinkError", Duration::from_secs(60)).await;
    assert!(
        said.starts_with("conflict") && said.contains(&taken),
        "{said}"
    );
    s3.delete_object()
        .bucket(&bucket)
        .key(&taken)
        .send()
        .await
        .expect("delete");
    let every_event_once = || async {
        let all = common::s3::objects(&s3, &bucket).await;
        let ids: HashSet<String> = all
            .iter()
            .flat_map(|o| &o.docs)
            .filter_map(|d| d["@id"].as_str().map(str::to_owned))
            .collect();
        let docs: usize = all.iter().map(|o| o.docs.len()).sum();
        (docs == sent.len() && ids.len() == sent.len()).then_some(())
    };
    eventually(
        "every event written again",
        Duration::from_secs(60),
        every_event_once,
    )
    .await;
    stop(fourth).await;
    assert!(every_event_once().await.is_some(), "and no more");
    eprintln!(
        "S3: {} events in {} objects; replays found the same objects, under old keys too",
        sent.len(),
        first.len()
    );
    setup.ns.delete().await;
}
