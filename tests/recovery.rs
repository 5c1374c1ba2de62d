//! The whole product through the faults production has: a worker process that
//! hangs, then is killed and restarted in place by its node (same Pod, same
//! name, so the same lease identity), as an OOM kill or a failed liveness
//! probe does. The status says so while nothing flows, the restarted process
//! takes its shards back within a lease duration, and every event arrives once.

mod common;

use std::time::Duration;

use common::controller::{aws_secret, condition, create, identity, log_group, start, wait_for};
use common::search::count;
use common::{TestNamespace, active_stream, eventually, stack, unique};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use serde_json::json;

const SETTLE: Duration = Duration::from_secs(120);
/// The workers' lease duration (the worker configuration's default).
const LEASE: Duration = Duration::from_secs(15);

async fn put_events(logs: &aws_sdk_cloudwatchlogs::Client, group: &str, from: usize, n: usize) {
    let now = logsub::time::now_millis();
    let events = (from..from + n).map(|i| {
        aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
            .timestamp(now + i64::try_from(i).unwrap())
            .message(format!(r#"{{"n": {i}}}"#))
            .build()
            .unwrap()
    });
    logs.put_log_events()
        .log_group_name(group)
        .log_stream_name("app-1")
        .set_log_events(Some(events.collect()))
        .send()
        .await
        .expect("put log events");
}

/// The worker Pod: its name, the pid of its container (the local node names
/// it in the container id) and the container's restarts.
async fn worker_pod(ns: &TestNamespace) -> Option<(String, u32, i32)> {
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels("app.kubernetes.io/component=worker"))
        .await
        .ok()?;
    let pod = pods.items.into_iter().next()?;
    let status = pod.status?.container_statuses?.into_iter().next()?;
    status.state?.running?;
    let pid = status
        .container_id?
        .strip_prefix("localnode://")?
        .parse()
        .ok()?;
    Some((pod.metadata.name?, pid, status.restart_count))
}

fn signal(pid: u32, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(sent.success(), "kill -{signal} {pid}");
}

/// The shard lease's holder and how often it changed hands.
async fn lease(ns: &TestNamespace) -> Option<(String, i32)> {
    let leases = ns
        .api::<Lease>()
        .list(&ListParams::default().labels("logsub.io/subscription=app"))
        .await
        .ok()?;
    let spec = leases.items.into_iter().next()?.spec?;
    Some((spec.holder_identity?, spec.lease_transitions.unwrap_or(0)))
}

#[tokio::test]
async fn a_hung_then_killed_worker_is_reported_and_resumes_in_the_same_pod() {
    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    let aws = stack().aws().await;
    let logs = aws_sdk_cloudwatchlogs::Client::new(&aws);
    let (stream, _) = active_stream(&aws_sdk_kinesis::Client::new(&aws), "recovery", 1).await;
    let group = format!("/{}", unique("recovery"));
    log_group(&logs, &group, "app-1").await;
    let index = unique("recovery");
    let env = aws_secret(&ns).await;
    let kubeconfig = identity(&ns).await;
    let _controller = start(&ns, &kubeconfig, "30s");
    create(
        &ns,
        json!({
            "apiVersion": "logsub.io/v1alpha1",
            "kind": "LogSubscription",
            "metadata": {"name": "app"},
            "spec": {
                "source": {"logGroups": {"names": [group]}, "roleArn": "arn:aws:iam::123456789012:role/CWLtoKinesis"},
                "stream": {"existing": {"name": stream}},
                "transforms": [{"json": {}}],
                "sink": {"elasticsearch": {"endpoint": stack().var("OPENSEARCH_URL"), "index": index}},
                "workers": {"replicas": 1, "env": env, "batch": {"maxWait": "200ms"}},
            }
        }),
    )
    .await;
    let ready = |l: &logsub::api::LogSubscription| {
        (condition(l, "Ready")? == ("True".into(), "Ready".into())).then_some(())
    };
    wait_for(&ns, "app", "Ready", SETTLE, ready).await;
    let base = stack().var("OPENSEARCH_URL");
    put_events(&logs, &group, 0, 200).await;
    eventually("200 documents", SETTLE, || async {
        (count(base, &index).await == 200).then_some(())
    })
    .await;
    let (pod, pid, restarts) = eventually("the worker pod", SETTLE, || worker_pod(&ns)).await;
    assert_eq!(restarts, 0);
    let (holder, transitions) = eventually("a held lease", SETTLE, || lease(&ns)).await;
    assert_eq!(holder, pod, "the worker's identity is its Pod name");

    // It hangs: its lease is no longer renewed, and the status says so
    // within a lease duration and a status interval or two, naming the shard.
    signal(pid, "STOP");
    let hung = tokio::time::Instant::now();
    let message = wait_for(&ns, "app", "Delivering=False", SETTLE, |l| {
        let (status, reason) = condition(l, "Delivering")?;
        let ready = condition(l, "Ready")?;
        let message = l
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Delivering")?
            .message
            .clone();
        (status == "False" && reason == "LeasesExpired" && ready.0 == "False").then_some(message)
    })
    .await;
    let noticed = hung.elapsed();
    assert!(
        message.contains("shardId-000000000000") && message.contains(&pod),
        "{message}"
    );
    assert!(
        noticed < LEASE + Duration::from_secs(20),
        "noticed after {noticed:?}"
    );

    // Killed as the OOM killer does: the node restarts the container in the
    // same Pod. The new process takes its predecessor's lease back at once.
    signal(pid, "KILL");
    let (same_pod, new_pid, restarts) =
        eventually("the container restarted in place", SETTLE, || async {
            worker_pod(&ns).await.filter(|(_, p, _)| *p != pid)
        })
        .await;
    let restarted = tokio::time::Instant::now();
    assert_eq!((same_pod.as_str(), restarts), (pod.as_str(), 1));
    assert_ne!(new_pid, pid);
    eventually("the lease taken back", LEASE, || async {
        lease(&ns)
            .await
            .filter(|(h, t)| *h == pod && *t > transitions)
    })
    .await;
    let takeover = restarted.elapsed();

    put_events(&logs, &group, 200, 200).await;
    // Each event's id is its document's `_id`: 400 documents are 400
    // different events, none missing (a second copy would be a conflict).
    eventually("400 documents, each once", SETTLE, || async {
        (count(base, &index).await == 400).then_some(())
    })
    .await;
    wait_for(&ns, "app", "Ready again, counting 400", SETTLE, |l| {
        let delivered = l.status.as_ref()?.delivery.as_ref()?.events_delivered;
        (ready(l).is_some() && delivered >= 400).then_some(())
    })
    .await;
    common::report(&format!(
        "trial worker-hung-then-killed-in-place: sent 400, delivered 400, unique 400, duplicates 0, dead-lettered 0, lost 0; reported (LeasesExpired) {:.1}s after it hung, lease taken back {:.1}s after the restart",
        noticed.as_secs_f64(),
        takeover.as_secs_f64()
    ));
    ns.delete().await;
}
