//! Shard discovery and shard reading against the stack's Kinesis: paging, order,
//! resuming after a checkpoint, and a split shard read to its end before its children.

mod common;

use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use common::{active_stream, stack};
use logsub::aws::kinesis::{Record, StartPosition, Stream};
use logsub::worker::source::kinesis::reader::{Read, ReaderLimits, ShardReader};

fn fast() -> ReaderLimits {
    ReaderLimits {
        idle: Duration::from_millis(50),
        min_interval: Duration::from_millis(20),
        ..ReaderLimits::default()
    }
}

/// Puts `n` records to the shard owning hash key `hash`, returning their data.
async fn put(
    client: &aws_sdk_kinesis::Client,
    name: &str,
    hash: u128,
    tag: &str,
    n: usize,
) -> Vec<Vec<u8>> {
    let mut sent = Vec::new();
    for i in 0..n {
        let data = format!("{tag}-{i}").into_bytes();
        client
            .put_record()
            .stream_name(name)
            .partition_key("k")
            .explicit_hash_key(hash.to_string())
            .data(Blob::new(data.clone()))
            .send()
            .await
            .expect("put record");
        sent.push(data);
    }
    sent
}

/// Reads until a call returns nothing new or the shard ends.
async fn drain(reader: &mut ShardReader) -> (Vec<Record>, Option<Vec<String>>) {
    let mut got = Vec::new();
    loop {
        match reader.next().await.expect("read") {
            Read::Records { records, .. } if records.is_empty() => return (got, None),
            Read::Records { records, .. } => got.extend(records),
            Read::End { children } => return (got, Some(children)),
            Read::Stalled { error } => panic!("reading stalled: {error}"),
        }
    }
}

#[tokio::test]
async fn shards_are_discovered_across_pages_and_read_in_order() {
    let config = stack().aws().await;
    let client = aws_sdk_kinesis::Client::new(&config);
    let (name, arn) = active_stream(&client, "reader", 3).await;
    let kinesis = Stream::new(client.clone(), &arn);

    let shards = kinesis.shards(1).await.expect("list shards, one per page");
    let ids: Vec<_> = shards.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "shardId-000000000000",
            "shardId-000000000001",
            "shardId-000000000002"
        ]
    );
    assert!(shards.iter().all(|s| s.parents.is_empty() && !s.closed));

    let sent = put(&client, &name, 0, "a", 25).await;
    let mut reader = ShardReader::new(
        kinesis.clone(),
        "shardId-000000000000",
        StartPosition::TrimHorizon,
        fast(),
    );
    let (records, end) = drain(&mut reader).await;
    assert_eq!(end, None, "an open shard does not end");
    assert_eq!(
        records.iter().map(|r| r.data.clone()).collect::<Vec<_>>(),
        sent
    );
    assert!(records.windows(2).all(|w| w[0].sequence < w[1].sequence));

    // A reader resuming after a checkpoint reads only what follows it.
    let checkpoint = records[9].sequence.clone();
    let mut resumed = ShardReader::new(
        kinesis,
        "shardId-000000000000",
        StartPosition::After(checkpoint),
        fast(),
    );
    let (rest, _) = drain(&mut resumed).await;
    assert_eq!(
        rest.iter().map(|r| r.data.clone()).collect::<Vec<_>>(),
        sent[10..]
    );
}

#[tokio::test]
async fn a_split_shard_is_read_to_its_end_then_its_children() {
    let config = stack().aws().await;
    let client = aws_sdk_kinesis::Client::new(&config);
    let (name, arn) = active_stream(&client, "reader", 1).await;
    let kinesis = Stream::new(client.clone(), &arn);

    let before = put(&client, &name, 1 << 100, "before", 5).await;
    client
        .split_shard()
        .stream_name(&name)
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key((1u128 << 127).to_string())
        .send()
        .await
        .expect("split");
    let low = put(&client, &name, 1 << 100, "low", 3).await;
    let high = put(&client, &name, 1 << 127 | 1, "high", 4).await;

    let shards = kinesis.shards(100).await.expect("shards");
    assert_eq!(shards.len(), 3);
    assert!(shards[0].closed);
    assert!(
        shards[1..]
            .iter()
            .all(|s| s.parents == ["shardId-000000000000"] && !s.closed)
    );

    let mut parent = ShardReader::new(
        kinesis.clone(),
        "shardId-000000000000",
        StartPosition::TrimHorizon,
        fast(),
    );
    let (records, end) = drain(&mut parent).await;
    assert_eq!(
        records.iter().map(|r| r.data.clone()).collect::<Vec<_>>(),
        before
    );
    let mut children = end.expect("the parent ends");
    children.sort();
    assert_eq!(children, ["shardId-000000000001", "shardId-000000000002"]);

    for (child, want) in [
        ("shardId-000000000001", low),
        ("shardId-000000000002", high),
    ] {
        let mut reader =
            ShardReader::new(kinesis.clone(), child, StartPosition::TrimHorizon, fast());
        let (records, end) = drain(&mut reader).await;
        assert_eq!(end, None);
        assert_eq!(
            records.iter().map(|r| r.data.clone()).collect::<Vec<_>>(),
            want,
            "{child}"
        );
    }
}
