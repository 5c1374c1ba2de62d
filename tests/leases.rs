//! Shard leases on the stack's real API server: taking, renewing, checkpointing,
//! releasing, and fencing by resourceVersion.

mod common;

use std::time::Duration;

use common::{TestNamespace, stack};
use logsub::contract::lease::stream_key;
use logsub::contract::{Checkpoint, SequenceNumber, ShardLease};
use logsub::worker::source::kinesis::lease::{LeaseError, LeaseStore};

const SHARD: &str = "shardId-000000000000";
const ARN: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/flow";
const STREAM: (&str, Option<i64>) = (ARN, Some(1_795_635_868_000));

async fn only(store: &mut LeaseStore) -> ShardLease {
    let mut leases = store.list().await.expect("list leases");
    assert_eq!(leases.len(), 1, "one lease");
    leases.remove(0)
}

#[tokio::test]
async fn a_worker_that_lost_its_lease_cannot_checkpoint() {
    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    let ttl = Duration::from_secs(10);
    let mut a = LeaseStore::new(
        client.clone(),
        &ns.name,
        "vpc-flow",
        STREAM,
        "worker-a",
        ttl,
    );
    let mut b = LeaseStore::new(
        client.clone(),
        &ns.name,
        "vpc-flow",
        STREAM,
        "worker-b",
        ttl,
    );

    a.ensure(SHARD, &[]).await.expect("create lease");
    b.ensure(SHARD, &[])
        .await
        .expect("creating it again is fine");
    let seen_by_b = only(&mut b).await;
    assert_eq!(
        seen_by_b.name(),
        format!(
            "vpc-flow-{}-shardid-000000000000",
            stream_key(STREAM.0, STREAM.1)
        )
    );
    assert_eq!(seen_by_b.holder(), None);
    assert_eq!(seen_by_b.checkpoint(), Checkpoint::None);

    // A takes it; B, acting on what it read before, loses the race.
    let free = only(&mut a).await;
    let held_by_a = a.take(&free).await.expect("a takes");
    assert_eq!(held_by_a.holder(), Some("worker-a"));
    assert!(matches!(b.take(&seen_by_b).await, Err(LeaseError::Lost(_))));

    let seq =
        SequenceNumber::parse("49590338271490256608559692538361571095921575989136588898").unwrap();
    let held_by_a = a
        .checkpoint(&held_by_a, &Checkpoint::At(seq.clone()))
        .await
        .expect("checkpoint");
    let held_by_a = a.renew(&held_by_a).await.expect("renew");

    // B steals it, reading first; A's next checkpoint is refused (fencing).
    let current = only(&mut b).await;
    let stolen = b.take(&current).await.expect("b steals");
    assert_eq!(stolen.holder(), Some("worker-b"));
    assert_eq!(
        stolen.checkpoint(),
        Checkpoint::At(seq.clone()),
        "the checkpoint travels with the lease"
    );
    let later =
        SequenceNumber::parse("49590338271490256608559692538361571095921575989136588999").unwrap();
    assert!(matches!(
        a.checkpoint(&held_by_a, &Checkpoint::At(later)).await,
        Err(LeaseError::Lost(_))
    ));
    assert!(matches!(
        a.renew(&held_by_a).await,
        Err(LeaseError::Lost(_))
    ));
    assert_eq!(
        only(&mut a).await.checkpoint(),
        Checkpoint::At(seq),
        "the fenced write changed nothing"
    );

    // B reads the shard to its end and hands the lease back.
    let done = b
        .checkpoint(&stolen, &Checkpoint::ShardEnd)
        .await
        .expect("shard end");
    let released = b.release(&done).await.expect("release");
    assert_eq!(released.holder(), None);
    assert!(b.views(std::slice::from_ref(&released))[0].finished);
    b.delete(&released).await.expect("delete");
    assert!(b.list().await.expect("list").is_empty());
    ns.delete().await;
}

#[tokio::test]
async fn a_lease_left_unrenewed_for_its_duration_expires() {
    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    let ttl = Duration::from_millis(800);
    let mut a = LeaseStore::new(client.clone(), &ns.name, "lambda", STREAM, "worker-a", ttl);
    let mut b = LeaseStore::new(client.clone(), &ns.name, "lambda", STREAM, "worker-b", ttl);
    a.ensure("shardId-000000000007", &["shardId-000000000003".into()])
        .await
        .expect("create");
    let free = only(&mut a).await;
    let held = a.take(&free).await.expect("take");
    assert_eq!(held.parents(), ["shardId-000000000003"]);

    let lease = only(&mut b).await;
    assert!(!b.expired(&lease), "just taken");
    // Expiry is time without change as B observes it; let that time pass.
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    let lease = only(&mut b).await;
    assert!(b.expired(&lease), "unrenewed for longer than its duration");
    assert!(
        !a.expired(&lease),
        "its holder does not call its own lease expired"
    );

    // A renewal is a change: B starts counting again.
    a.renew(&held).await.expect("renew");
    let lease = only(&mut b).await;
    assert!(!b.expired(&lease));
    ns.delete().await;
}

/// Checkpoints belong to one stream: another stream of the same subscription,
/// or the same name created again, has leases of its own and never resumes
/// from these.
#[tokio::test]
async fn checkpoints_belong_to_one_stream() {
    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    let ttl = Duration::from_secs(10);
    let store = |stream: (&'static str, Option<i64>)| {
        LeaseStore::new(client.clone(), &ns.name, "app", stream, "worker-a", ttl)
    };
    let mut first = store(STREAM);
    first.ensure(SHARD, &[]).await.expect("create");
    let lease = only(&mut first).await;
    let lease = first.take(&lease).await.expect("take");
    let seq =
        SequenceNumber::parse("49590338271490256608559692538361571095921575989136588898").unwrap();
    first
        .checkpoint(&lease, &Checkpoint::At(seq.clone()))
        .await
        .expect("checkpoint");

    let other = "arn:aws:kinesis:us-east-1:123456789012:stream/other";
    let recreated = (ARN, Some(1_795_700_000_000));
    for stream in [(other, STREAM.1), recreated] {
        let mut next = store(stream);
        assert!(next.list().await.expect("list").is_empty(), "{stream:?}");
        next.ensure(SHARD, &[]).await.expect("create");
        assert_eq!(
            only(&mut next).await.checkpoint(),
            Checkpoint::None,
            "{stream:?}"
        );
    }
    assert_eq!(
        only(&mut first).await.checkpoint(),
        Checkpoint::At(seq.clone()),
        "the first stream's lease is untouched"
    );

    // A lease that lost its labels (edited by hand) is neither listed nor made
    // again: making it puts them back, and it is listed once more.
    let name = first.lease_name(SHARD);
    let leases = ns.api::<k8s_openapi::api::coordination::v1::Lease>();
    let mut lease = leases.get(&name).await.expect("the lease");
    lease.metadata.labels = None;
    leases
        .replace(&name, &Default::default(), &lease)
        .await
        .expect("labels removed");
    assert!(first.list().await.expect("list").is_empty());
    first.ensure(SHARD, &[]).await.expect("ensure");
    assert_eq!(only(&mut first).await.checkpoint(), Checkpoint::At(seq));
    ns.delete().await;
}
