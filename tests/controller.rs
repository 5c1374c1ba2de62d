//! `logsub controller` end to end on the stack: the controller runs as its own
//! process with a ServiceAccount's rights only; the worker pods it creates run
//! on the local node; CloudWatch Logs and Kinesis are the AWS emulator's, and
//! documents land in OpenSearch.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_cloudwatchlogs::Client as Logs;
use aws_sdk_kinesis::Client as Kinesis;
use common::controller::{
    aws_secret, can_i, condition, create, delete_all, failed_for, filters, identity, put_events,
    start, start_with, wait_for, without_workers,
};
use common::search::count;
use common::{TestNamespace, active_stream, eventually, stack, unique};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{DeleteParams, Patch, PatchParams};
use logsub::api::{FilterState, LogSubscription};
use serde_json::json;

const ROLE: &str = "arn:aws:iam::123456789012:role/CWLtoKinesis";
const SETTLE: Duration = Duration::from_secs(120);

async fn clients() -> (Logs, Kinesis) {
    let aws = stack().aws().await;
    (Logs::new(&aws), Kinesis::new(&aws))
}

async fn log_group(logs: &Logs, name: &str) {
    common::controller::log_group(logs, name, "app-1").await;
}

async fn foreign_filter(logs: &Logs, group: &str, name: &str, arn: &str) {
    logs.put_subscription_filter()
        .log_group_name(group)
        .filter_name(name)
        .filter_pattern("")
        .destination_arn(arn)
        .role_arn(ROLE)
        .send()
        .await
        .expect("put a third party's filter");
}

fn group_states(lsub: &LogSubscription) -> BTreeMap<String, FilterState> {
    lsub.status
        .iter()
        .flat_map(|s| s.log_groups.iter().map(|g| (g.name.clone(), g.filter)))
        .collect()
}

fn config_hash(d: &Deployment) -> Option<String> {
    d.spec
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get("logsub.io/config-hash")
        .cloned()
}

/// Create → filters, workers, delivery, Ready with counts; change → filters
/// updated and workers rolled; drift → restored; a new group → subscribed;
/// delete → our filters gone, a third party's kept.
#[tokio::test]
async fn a_subscription_is_reconciled_end_to_end() {
    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    let (logs, kinesis) = clients().await;
    let (stream, arn) = active_stream(&kinesis, "lsub", 1).await;
    // A third party's filter sends elsewhere (the same stream would carry its events twice).
    let (_, elsewhere) = active_stream(&kinesis, "audit", 1).await;
    let prefix = format!("/{}/app-", unique("e2e"));
    let (a, b, other) = (
        format!("{prefix}a"),
        format!("{prefix}b"),
        format!("{prefix}x-other"),
    );
    for g in [&a, &b, &other] {
        log_group(&logs, g).await;
    }
    foreign_filter(&logs, &b, "audit", &elsewhere).await;
    let index = unique("lsub-e2e");
    let env = aws_secret(&ns).await;
    let kubeconfig = identity(&ns).await;
    let controller = start(&ns, &kubeconfig, "10s");

    create(
        &ns,
        json!({
            "apiVersion": "logsub.io/v1alpha1",
            "kind": "LogSubscription",
            "metadata": {"name": "app"},
            "spec": {
                "source": {
                    "logGroups": {"prefix": prefix, "exclude": [format!("{prefix}x-*")]},
                    "roleArn": ROLE,
                    "rescanInterval": "30s",
                },
                "stream": {"existing": {"name": stream}},
                "transforms": [{"json": {}}],
                "sink": {"elasticsearch": {"endpoint": stack().var("OPENSEARCH_URL"), "index": index}},
                "workers": {"replicas": 1, "env": env, "batch": {"maxWait": "200ms"}},
            }
        }),
    )
    .await;

    let ours = format!("logsub/{}/app", ns.name);
    let lsub = wait_for(&ns, "app", "Ready=True", SETTLE, |l| {
        (condition(l, "Ready")? == ("True".into(), "Ready".into())).then(|| l.clone())
    })
    .await;
    let status = lsub.status.as_ref().unwrap();
    assert_eq!(status.stream_arn.as_deref(), Some(arn.as_str()));
    assert_eq!(status.log_group_count, Some(2));
    assert_eq!(
        group_states(&lsub),
        BTreeMap::from([
            (a.clone(), FilterState::Active),
            (b.clone(), FilterState::Active)
        ])
    );
    for g in [&a, &b] {
        assert_eq!(
            filters(&logs, g).await.get(&ours),
            Some(&(String::new(), arn.clone(), ROLE.to_owned())),
            "{g}"
        );
    }
    assert!(
        filters(&logs, &b).await.contains_key("audit"),
        "a third party's filter is untouched"
    );
    assert!(
        filters(&logs, &other).await.is_empty(),
        "an excluded group is not subscribed"
    );
    let waited = stack().kubectl(&[
        "wait",
        "--for=condition=Ready",
        "lsub/app",
        "-n",
        &ns.name,
        "--timeout=10s",
    ]);
    assert!(waited.status.success(), "kubectl wait: {waited:?}");
    // The workers' objects, owned by the LogSubscription.
    let name = "app-worker";
    assert!(
        ns.api::<ServiceAccount>()
            .get_opt(name)
            .await
            .unwrap()
            .is_some()
    );
    // Bound to the workers' ClusterRole, for them and for the controller,
    // which writes Leases here through it.
    let binding = ns
        .api::<RoleBinding>()
        .get("app-worker-leases")
        .await
        .unwrap();
    assert_eq!(binding.role_ref.name, "logsub-worker");
    assert!(can_i(&ns.name, name, "update", "leases", &ns.name));
    assert!(can_i(
        &ns.name,
        "logsub-controller",
        "delete",
        "leases",
        &ns.name
    ));
    let config = ns.api::<ConfigMap>().get(name).await.unwrap();
    assert!(config.data.unwrap()["worker.yaml"].contains(&arn));
    let deployment = ns.api::<Deployment>().get(name).await.unwrap();
    let owner = &deployment.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("LogSubscription", "app")
    );

    // Events put into CloudWatch Logs reach OpenSearch, and the status counts them.
    let messages: Vec<String> = (0..40)
        .map(|i| format!(r#"{{"n": {i}, "level": "info"}}"#))
        .collect();
    put_events(&logs, &a, "app-1", &messages[..20]).await;
    put_events(&logs, &b, "app-1", &messages[20..]).await;
    let base = stack().var("OPENSEARCH_URL");
    eventually("40 documents in OpenSearch", SETTLE, || async {
        (count(base, &index).await == 40).then_some(())
    })
    .await;
    wait_for(
        &ns,
        "app",
        "40 events delivered in the status",
        SETTLE,
        |l| {
            let delivery = l.status.as_ref()?.delivery.as_ref()?;
            (delivery.events_delivered == 40 && delivery.last_delivered_time.is_some())
                .then_some(())
        },
    )
    .await;

    let listed = stack().kubectl(&["get", "lsub", "-n", &ns.name]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    let row: Vec<&str> = listed
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    // NAME READY SINK LOG-GROUPS REASON DELIVERED AGE
    assert_eq!(
        row[..6],
        [
            "app",
            "True",
            &format!("elasticsearch:{index}"),
            "2",
            "Ready",
            "40"
        ],
        "{listed}"
    );

    // What the controller did is told in Events with stable reasons.
    let reasons = eventually(
        "the controller's Events",
        Duration::from_secs(30),
        || async {
            let events = ns
                .api::<k8s_openapi::api::events::v1::Event>()
                .list(&Default::default())
                .await
                .ok()?;
            let reasons: Vec<String> = events
                .items
                .iter()
                .filter(|e| e.reporting_controller.as_deref() == Some("logsub-controller"))
                .filter_map(|e| e.reason.clone())
                .collect();
            (reasons.iter().any(|r| r == "Ready")).then_some(reasons)
        },
    )
    .await;
    assert!(
        reasons.iter().any(|r| r == "SubscriptionFilterPut"),
        "{reasons:?}"
    );

    // A spec change: the filter is updated, and the workers roll to the new config.
    let before = config_hash(&deployment);
    ns.api::<LogSubscription>()
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "source": {"filterPattern": "ERROR"},
                "workers": {"batch": {"maxEvents": 100}},
            }})),
        )
        .await
        .unwrap();
    eventually(
        "the filter pattern updated on both groups",
        SETTLE,
        || async {
            let (fa, fb) = (filters(&logs, &a).await, filters(&logs, &b).await);
            (fa.get(&ours)?.0 == "ERROR" && fb.get(&ours)?.0 == "ERROR").then_some(())
        },
    )
    .await;
    eventually("the workers rolled to the new config", SETTLE, || async {
        let d = ns.api::<Deployment>().get(name).await.ok()?;
        (config_hash(&d) != before).then_some(())
    })
    .await;

    // Drift: our filter deleted behind our back is put back within a resync.
    logs.delete_subscription_filter()
        .log_group_name(&a)
        .filter_name(&ours)
        .send()
        .await
        .unwrap();
    eventually(
        "the deleted filter restored",
        Duration::from_secs(30),
        || async { filters(&logs, &a).await.contains_key(&ours).then_some(()) },
    )
    .await;

    // A group created later that matches is subscribed at the next rescan.
    let c = format!("{prefix}c");
    log_group(&logs, &c).await;
    eventually(
        "the new group subscribed",
        Duration::from_secs(60),
        || async { filters(&logs, &c).await.contains_key(&ours).then_some(()) },
    )
    .await;
    wait_for(&ns, "app", "three groups in the status", SETTLE, |l| {
        (l.status.as_ref()?.log_group_count == Some(3)).then_some(())
    })
    .await;

    // A group that leaves the selection loses our filter, and only ours.
    ns.api::<LogSubscription>()
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"source": {"logGroups": {
                "exclude": [format!("{prefix}x-*"), b.clone()],
            }}}})),
        )
        .await
        .unwrap();
    eventually(
        "our filter gone from the excluded group",
        SETTLE,
        || async {
            let on_b = filters(&logs, &b).await;
            (!on_b.contains_key(&ours) && on_b.contains_key("audit")).then_some(())
        },
    )
    .await;
    wait_for(&ns, "app", "two groups in the status", SETTLE, |l| {
        let status = l.status.as_ref()?;
        (status.log_group_count == Some(2) && status.log_groups.iter().all(|g| g.name != b))
            .then_some(())
    })
    .await;

    // At rest, AWS is asked little: count the calls over two resync periods.
    let calls = "logsub_controller_aws_calls_total";
    let at_rest = controller.metric(calls, &[]).await;
    tokio::time::sleep(Duration::from_secs(21)).await;
    let per_resync = (controller.metric(calls, &[]).await - at_rest) / 2.0;
    // One stream description (cached) and one filter description per group;
    // a rescan lists the prefix's groups.
    assert!(
        per_resync <= 6.0,
        "{per_resync} AWS calls per resync at rest"
    );

    // Deletion removes our filters, keeps the third party's, and finishes.
    ns.api::<LogSubscription>()
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the LogSubscription gone", SETTLE, || async {
        ns.api::<LogSubscription>()
            .get_opt("app")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    for g in [&a, &b, &c] {
        assert!(!filters(&logs, g).await.contains_key(&ours), "{g}");
    }
    assert!(filters(&logs, &b).await.contains_key("audit"));
    assert!(
        common::pipeline::leases(&ns.name).await.is_empty(),
        "the shard checkpoints go with the subscription"
    );
    common::controller::assert_policy_allows_what_was_called(&controller).await;
    assert!(
        controller
            .metric("logsub_controller_reconciles_total", &["result=\"ok\""])
            .await
            > 0.0
    );
    drop(controller);
    ns.delete().await;
}

async fn stream_of(kinesis: &Kinesis, name: &str) -> Option<(String, i32)> {
    let s = kinesis
        .describe_stream_summary()
        .stream_name(name)
        .send()
        .await
        .ok()?
        .stream_description_summary?;
    Some((s.stream_status.as_str().to_owned(), s.open_shard_count))
}

fn managed(name: &str, group: &str, policy: &str) -> serde_json::Value {
    let mut lsub = without_workers(
        name,
        json!({"names": [group]}),
        json!({"managed": {"shardCount": 1}}),
    );
    lsub["spec"]["deletionPolicy"] = json!(policy);
    lsub
}

/// A managed stream is created (tagged), resized with the spec, and deleted
/// with its LogSubscription under `Delete`; under `Retain` it stays, with the filter.
#[tokio::test]
async fn a_managed_stream_follows_its_subscription() {
    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    let (logs, kinesis) = clients().await;
    let group = format!("/{}", unique("managed"));
    log_group(&logs, &group).await;
    let kubeconfig = identity(&ns).await;
    let controller = start(&ns, &kubeconfig, "10s");
    create(&ns, managed("deleted", &group, "Delete")).await;
    create(&ns, managed("kept", &group, "Retain")).await;
    let (deleted, kept) = (
        format!("logsub_{}_deleted", ns.name),
        format!("logsub_{}_kept", ns.name),
    );
    for name in ["deleted", "kept"] {
        wait_for(&ns, name, "StreamReady and filters", SETTLE, |l| {
            (condition(l, "StreamReady")?.0 == "True"
                && condition(l, "SubscriptionFilterReady")?.0 == "True")
                .then_some(())
        })
        .await;
    }
    let tags = kinesis
        .list_tags_for_stream()
        .stream_name(&deleted)
        .send()
        .await
        .unwrap();
    let uid = ns
        .api::<LogSubscription>()
        .get("deleted")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    assert!(
        tags.tags()
            .iter()
            .any(|t| t.key() == "logsub.io/uid" && t.value() == Some(uid.as_str())),
        "{tags:?}"
    );
    let filter = |name: &str| format!("logsub/{}/{name}", ns.name);
    let on_group = filters(&logs, &group).await;
    assert!(on_group.contains_key(&filter("deleted")) && on_group.contains_key(&filter("kept")));

    // A shard count change is applied with UpdateShardCount.
    ns.api::<LogSubscription>()
        .patch(
            "deleted",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"stream": {"managed": {"shardCount": 2}}}})),
        )
        .await
        .unwrap();
    eventually("two open shards", SETTLE, || async {
        (stream_of(&kinesis, &deleted).await?.1 == 2).then_some(())
    })
    .await;

    delete_all(&ns).await;
    // Create, tag, resize, delete: every call is in the documented policy.
    common::controller::assert_policy_allows_what_was_called(&controller).await;
    assert_eq!(
        stream_of(&kinesis, &deleted).await,
        None,
        "Delete removes the managed stream"
    );
    assert!(
        stream_of(&kinesis, &kept).await.is_some(),
        "Retain keeps it"
    );
    let on_group = filters(&logs, &group).await;
    assert!(!on_group.contains_key(&filter("deleted")) && on_group.contains_key(&filter("kept")));
    ns.delete().await;
}

/// What cannot work is said in the conditions, and the rest goes on: a spec
/// the schema lets through but that cannot work, a missing stream, a group
/// whose two filter slots are taken.
#[tokio::test]
async fn problems_become_conditions() {
    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    let (logs, kinesis) = clients().await;
    let (stream, arn) = active_stream(&kinesis, "problems", 1).await;
    let full = format!("/{}/full", unique("problems"));
    let fine = full.replace("/full", "/fine");
    for g in [&full, &fine] {
        log_group(&logs, g).await;
    }
    for f in ["audit", "siem"] {
        foreign_filter(&logs, &full, f, &arn).await;
    }
    let kubeconfig = identity(&ns).await;
    let _controller = start(&ns, &kubeconfig, "10s");
    let lsub = without_workers;
    create(
        &ns,
        lsub(
            "invalid",
            json!({"pattern": "^/app/(unclosed"}),
            json!({"existing": {"name": stream}}),
        ),
    )
    .await;
    create(
        &ns,
        lsub(
            "no-stream",
            json!({"names": [fine]}),
            json!({"existing": {"name": unique("missing")}}),
        ),
    )
    .await;
    let mut bad_pattern = lsub(
        "bad-pattern",
        json!({"names": [fine]}),
        json!({"existing": {"name": stream}}),
    );
    // Balanced, so it passes validation; CloudWatch Logs refuses it.
    bad_pattern["spec"]["source"]["filterPattern"] = json!("{ $.latency > fast }");
    create(&ns, bad_pattern).await;
    create(
        &ns,
        lsub(
            "full",
            json!({"names": [full, fine]}),
            json!({"existing": {"name": stream}}),
        ),
    )
    .await;

    let reason = |want: &'static str| {
        move |l: &LogSubscription| {
            let ready = condition(l, "Ready")?;
            let stalled = condition(l, "Stalled")?;
            (ready == ("False".to_owned(), want.to_owned()) && stalled.0 == "True").then_some(())
        }
    };
    wait_for(&ns, "invalid", "InvalidSpec", SETTLE, reason("InvalidSpec")).await;
    wait_for(
        &ns,
        "bad-pattern",
        "InvalidFilterPattern",
        SETTLE,
        reason("InvalidFilterPattern"),
    )
    .await;
    wait_for(
        &ns,
        "no-stream",
        "StreamNotFound",
        SETTLE,
        reason("StreamNotFound"),
    )
    .await;
    let full_lsub = wait_for(&ns, "full", "TooManyFilters", SETTLE, |l| {
        reason("TooManyFilters")(l).map(|()| l.clone())
    })
    .await;
    // The blocked group is named; the other is subscribed all the same.
    let states = group_states(&full_lsub);
    assert_eq!(states[&full], FilterState::LimitExceeded);
    assert_eq!(states[&fine], FilterState::Active);
    let ours = format!("logsub/{}/full", ns.name);
    let on_full = filters(&logs, &full).await;
    assert_eq!(on_full.keys().collect::<Vec<_>>(), ["audit", "siem"]);
    assert!(filters(&logs, &fine).await.contains_key(&ours));

    // A stream that appears later is picked up by the retries.
    let missing = ns.api::<LogSubscription>().get("no-stream").await.unwrap();
    let name = missing.spec.stream.existing.unwrap().name.unwrap();
    kinesis
        .create_stream()
        .stream_name(&name)
        .shard_count(1)
        .send()
        .await
        .unwrap();
    wait_for(
        &ns,
        "no-stream",
        "StreamReady once it exists",
        SETTLE,
        |l| (condition(l, "StreamReady")?.0 == "True").then_some(()),
    )
    .await;
    delete_all(&ns).await;
    assert_eq!(
        filters(&logs, &full).await.len(),
        2,
        "the foreign filters stay"
    );
    ns.delete().await;
}

/// Two replicas: one leads and reconciles; when it dies the other takes over.
#[tokio::test]
async fn a_standby_takes_over_from_a_dead_leader() {
    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    let (logs, kinesis) = clients().await;
    let (stream, _) = active_stream(&kinesis, "leader", 1).await;
    let group = format!("/{}", unique("leader"));
    log_group(&logs, &group).await;
    let kubeconfig = identity(&ns).await;
    let first = start(&ns, &kubeconfig, "10s");
    let second = start(&ns, &kubeconfig, "10s");
    let leaders = || async {
        (
            first_leader(&first).await,
            second.metric("logsub_controller_leader", &[]).await,
        )
    };
    async fn first_leader(c: &common::controller::Controller) -> f64 {
        c.metric("logsub_controller_leader", &[]).await
    }
    let (a, b) = eventually("a leader", Duration::from_secs(30), || async {
        let (a, b) = leaders().await;
        (a + b == 1.0).then_some((a, b))
    })
    .await;
    let (leader, standby) = if a == 1.0 {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(a + b, 1.0, "exactly one leads");
    let spec = |name: &str| {
        without_workers(
            name,
            json!({"names": [group]}),
            json!({"existing": {"name": stream}}),
        )
    };
    create(&ns, spec("one")).await;
    let filter_ready =
        |l: &LogSubscription| (condition(l, "SubscriptionFilterReady")?.0 == "True").then_some(());
    wait_for(&ns, "one", "reconciled by the leader", SETTLE, filter_ready).await;
    assert_eq!(
        standby
            .metric("logsub_controller_reconciles_total", &[])
            .await,
        0.0,
        "the standby does not reconcile"
    );
    // kill -9: the lease is not released, so it must expire.
    drop(leader);
    eventually("the standby leads", Duration::from_secs(30), || async {
        (standby.metric("logsub_controller_leader", &[]).await == 1.0).then_some(())
    })
    .await;
    create(&ns, spec("two")).await;
    wait_for(
        &ns,
        "two",
        "reconciled by the new leader",
        SETTLE,
        filter_ready,
    )
    .await;
    delete_all(&ns).await;

    // SIGTERM: the leader finishes, exits cleanly and gives the lease up, so
    // a third replica leads at once instead of after the lease expires.
    let third = start(&ns, &kubeconfig, "10s");
    assert_eq!(third.metric("logsub_controller_leader", &[]).await, 0.0);
    let mut standby = standby;
    let pid = standby.child.id().expect("pid");
    let stopped = std::time::Instant::now();
    assert_eq!(common::pipeline::unsafe_kill(pid as i32), 0);
    let status = tokio::time::timeout(Duration::from_secs(30), standby.child.wait())
        .await
        .expect("it exits")
        .expect("wait");
    assert!(status.success(), "a clean exit on SIGTERM: {status}");
    eventually(
        "the third replica leads",
        Duration::from_secs(30),
        || async { (third.metric("logsub_controller_leader", &[]).await == 1.0).then_some(()) },
    )
    .await;
    // Well inside the 6 s lease: it was released, not left to expire.
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopped.elapsed()
    );
    ns.delete().await;
}

/// AWS out of reach: the condition says so, and retries back off instead of
/// spinning (the calls are counted).
#[tokio::test]
async fn unreachable_aws_is_retried_with_backoff() {
    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    let kubeconfig = identity(&ns).await;
    let closed = format!("http://127.0.0.1:{}", common::pipeline::free_port());
    let controller =
        common::controller::start_with(&ns, &kubeconfig, "10s", &["--aws-endpoint-url", &closed]);
    create(
        &ns,
        without_workers(
            "unreachable",
            json!({"names": ["/a"]}),
            json!({"existing": {"name": "s"}}),
        ),
    )
    .await;
    wait_for(&ns, "unreachable", "AwsUnavailable", SETTLE, |l| {
        (condition(l, "StreamReady")? == ("Unknown".into(), "AwsUnavailable".into())).then_some(())
    })
    .await;
    let started = controller
        .metric("logsub_controller_aws_calls_total", &[])
        .await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let calls = controller
        .metric(
            "logsub_controller_aws_calls_total",
            &["outcome=\"transport_error\""],
        )
        .await;
    // Backoff doubles from 1 s: about six tries in 30 s, each up to three SDK attempts.
    assert!(
        calls - started <= 30.0,
        "{} attempts in 30 s",
        calls - started
    );
    assert!(calls >= 3.0, "it keeps trying: {calls}");
    drop(controller);
    // Nothing was created in AWS, so nothing holds the deletion.
    let api = ns.api::<LogSubscription>();
    api.patch(
        "unreachable",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    ns.delete().await;
}

/// With no region from its flags, environment or profile, the controller
/// refuses a LogSubscription that names none, saying why, rather than calling a
/// guessed region; one that names its region is served.
#[tokio::test]
async fn without_a_default_region_the_spec_must_name_one() {
    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    let kubeconfig = identity(&ns).await;
    let (_, kinesis) = clients().await;
    let (stream, _) = active_stream(&kinesis, "region", 1).await;
    let _controller = common::controller::start_with_env(
        &ns,
        &kubeconfig,
        "10s",
        &[],
        &["AWS_REGION", "AWS_DEFAULT_REGION"],
    );
    let groups = json!({"names": ["/region/a"]});
    create(
        &ns,
        without_workers(
            "unnamed",
            groups.clone(),
            json!({"existing": {"name": stream}}),
        ),
    )
    .await;
    let mut named = without_workers("named", groups, json!({"existing": {"name": stream}}));
    named["spec"]["region"] = json!(stack().var("AWS_REGION"));
    create(&ns, named).await;

    let message = wait_for(&ns, "unnamed", "InvalidSpec", SETTLE, |l| {
        let ready = l
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")?;
        (ready.reason == "InvalidSpec").then(|| ready.message.clone())
    })
    .await;
    assert!(message.contains("no AWS region"), "{message}");
    wait_for(&ns, "named", "StreamReady", SETTLE, |l| {
        (condition(l, "StreamReady")?.0 == "True").then_some(())
    })
    .await;
    delete_all(&ns).await;
    ns.delete().await;
}

/// What cannot work is refused at admission (a name no label can hold, a spec
/// that sets the workers' identity), or shown as a condition with the API
/// server's message (workers' objects it refuses); deletion never hangs on it.
#[tokio::test]
async fn what_cannot_work_is_refused_or_shown_and_deletion_does_not_hang() {
    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    let (_, kinesis) = clients().await;
    let (stream, _) = active_stream(&kinesis, "refused", 1).await;
    let kubeconfig = identity(&ns).await;
    let _controller = start(&ns, &kubeconfig, "10s");
    let api = ns.api::<LogSubscription>();
    let refused = |value: serde_json::Value| {
        let api = api.clone();
        async move {
            let lsub: LogSubscription = serde_json::from_value(value).unwrap();
            match api.create(&Default::default(), &lsub).await {
                Err(kube::Error::Api(s)) => (s.code, s.message),
                other => panic!("admitted: {other:?}"),
            }
        }
    };
    let groups = json!({"names": ["/refused/a"]});
    let long = "a".repeat(70);
    let (code, message) = refused(without_workers(
        &long,
        groups.clone(),
        json!({"existing": {"name": stream}}),
    ))
    .await;
    assert_eq!(code, 422, "{message}");
    assert!(message.contains("at most 63 characters"), "{message}");
    let mut identity_env =
        without_workers("env", groups.clone(), json!({"existing": {"name": stream}}));
    identity_env["spec"]["workers"]["env"] = json!([{"name": "POD_NAME", "value": "everyone"}]);
    let (code, message) = refused(identity_env).await;
    assert_eq!(code, 422, "{message}");
    assert!(message.contains("POD_NAME"), "{message}");

    // A worker Deployment the API server refuses (a negative CPU request).
    let mut negative = without_workers("negative", groups, json!({"existing": {"name": stream}}));
    negative["spec"]["workers"] = json!({"replicas": 1, "resources": {"requests": {"cpu": "-1"}}});
    create(&ns, negative).await;
    let message = wait_for(&ns, "negative", "WorkersRefused", SETTLE, |l| {
        let message = failed_for(l, "WorkersAvailable", "WorkersRefused")?;
        (condition(l, "Ready")?.0 == "False").then_some(message)
    })
    .await;
    assert!(
        message.contains("422") || message.contains("Invalid"),
        "{message}"
    );
    assert!(
        message.contains("cpu"),
        "the API server's message: {message}"
    );
    delete_all(&ns).await;
    ns.delete().await;
}

/// Objects someone else made under the workers' names are never taken: the
/// LogSubscription says `NameConflict` and changes nothing of them, and its
/// deletion (under `Delete`) leaves them as they were.
#[tokio::test]
async fn objects_of_the_workers_names_made_by_others_are_left_alone() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::ConfigMap;

    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    let (_, kinesis) = clients().await;
    let (stream, _) = active_stream(&kinesis, "taken", 1).await;
    let kubeconfig = identity(&ns).await;
    let _controller = start(&ns, &kubeconfig, "10s");
    let theirs: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "payments-worker", "labels": {"app": "payments"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "payments"}},
            "template": {
                "metadata": {"labels": {"app": "payments"}},
                "spec": {"containers": [{"name": "payments", "image": "payments:1"}]},
            },
        },
    }))
    .unwrap();
    let deployments = ns.api::<Deployment>();
    let made = deployments
        .create(&Default::default(), &theirs)
        .await
        .expect("their Deployment");
    let config: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "payments-worker"},
        "data": {"theirs": "yes"},
    }))
    .unwrap();
    ns.api::<ConfigMap>()
        .create(&Default::default(), &config)
        .await
        .expect("their ConfigMap");

    let mut lsub = without_workers(
        "payments",
        json!({"names": ["/taken/a"]}),
        json!({"existing": {"name": stream}}),
    );
    lsub["spec"]["deletionPolicy"] = json!("Delete");
    create(&ns, lsub).await;
    let message = wait_for(&ns, "payments", "NameConflict", SETTLE, |l| {
        failed_for(l, "WorkersAvailable", "NameConflict")
    })
    .await;
    assert!(message.contains("payments-worker"), "{message}");
    let unchanged = |d: &Deployment| {
        d.metadata.uid == made.metadata.uid
            && d.metadata.owner_references.is_none()
            && d.spec
                .template
                .spec
                .as_ref()
                .map(|p| p.containers[0].image.clone())
                == Some(Some("payments:1".into()))
    };
    let now = deployments.get("payments-worker").await.expect("theirs");
    assert!(unchanged(&now), "{:?}", now.metadata);
    let kept = ns
        .api::<ConfigMap>()
        .get("payments-worker")
        .await
        .expect("theirs");
    assert_eq!(
        kept.data
            .unwrap_or_default()
            .get("theirs")
            .map(String::as_str),
        Some("yes")
    );

    delete_all(&ns).await;
    let after = deployments
        .get("payments-worker")
        .await
        .expect("still there");
    assert!(unchanged(&after), "{:?}", after.metadata);
    assert!(after.metadata.deletion_timestamp.is_none());
    ns.delete().await;
}

/// Someone (a GitOps prune, say) deletes one LogSubscription's RoleBinding,
/// ServiceAccount and ConfigMap. Another LogSubscription's binding in the
/// namespace keeps the controller's own lease reads allowed, so no refusal
/// tells it: its watches of those objects do, and each is back long before
/// the hour-long resync.
#[tokio::test]
async fn the_workers_objects_deleted_by_someone_are_put_back() {
    use k8s_openapi::api::core::v1::ConfigMap;

    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    let (logs, kinesis) = clients().await;
    let (stream, _) = active_stream(&kinesis, "pruned", 1).await;
    // Groups that exist: a missing one would be looked for again well
    // before the resync, and its sync apply the binding.
    let prefix = format!("/{}", unique("pruned"));
    for name in ["a", "b"] {
        log_group(&logs, &format!("{prefix}/{name}")).await;
    }
    let kubeconfig = identity(&ns).await;
    let _controller = start_with(&ns, &kubeconfig, "1h", &["--status-interval", "2s"]);
    for name in ["a", "b"] {
        create(
            &ns,
            without_workers(
                name,
                json!({"names": [format!("{prefix}/{name}")]}),
                json!({"existing": {"name": stream}}),
            ),
        )
        .await;
    }
    let bindings = ns.api::<RoleBinding>();
    let accounts = ns.api::<ServiceAccount>();
    let configs = ns.api::<ConfigMap>();
    let (b, a, c) = (&bindings, &accounts, &configs);
    let all_there = move || async move {
        for name in ["a", "b"] {
            let worker = format!("{name}-worker");
            b.get_opt(&format!("{worker}-leases")).await.ok()??;
            a.get_opt(&worker).await.ok()??;
            c.get_opt(&worker).await.ok()??;
        }
        Some(())
    };
    // Settled: filters put, workers' objects applied, nothing to retry.
    for name in ["a", "b"] {
        for check in ["SubscriptionFilterReady", "WorkersAvailable"] {
            wait_for(&ns, name, check, SETTLE, |l| {
                (condition(l, check)?.0 == "True").then_some(())
            })
            .await;
        }
    }
    eventually("the workers' objects", SETTLE, all_there).await;

    let gone = DeleteParams::default();
    bindings
        .delete("a-worker-leases", &gone)
        .await
        .expect("delete");
    accounts.delete("a-worker", &gone).await.expect("delete");
    configs.delete("a-worker", &gone).await.expect("delete");
    eventually(
        "the deleted objects back",
        Duration::from_secs(30),
        all_there,
    )
    .await;
    assert!(can_i(&ns.name, "a-worker", "update", "leases", &ns.name));
    delete_all(&ns).await;
    ns.delete().await;
}

/// A tenant who may edit objects in its namespace edits the workers': adds
/// its own ServiceAccount to their RoleBinding (to write Leases through it),
/// points their ServiceAccount at another IAM role, rewrites their
/// configuration. Each edit is undone at the next status refresh, long
/// before the hour-long resync, and the tenant keeps nothing.
#[tokio::test]
async fn a_tenants_edits_of_the_workers_objects_are_undone() {
    use k8s_openapi::api::core::v1::ConfigMap;

    const ROLE: &str = "arn:aws:iam::123456789012:role/worker";
    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    let (logs, kinesis) = clients().await;
    let (stream, _) = active_stream(&kinesis, "edited", 1).await;
    let group = format!("/{}/g", unique("edited"));
    log_group(&logs, &group).await;
    let kubeconfig = identity(&ns).await;
    let _controller = start_with(&ns, &kubeconfig, "1h", &["--status-interval", "2s"]);
    let mut lsub = without_workers(
        "app",
        json!({"names": [group]}),
        json!({"existing": {"name": stream}}),
    );
    lsub["spec"]["workers"]["serviceAccount"] =
        json!({"annotations": {"eks.amazonaws.com/role-arn": ROLE}});
    create(&ns, lsub).await;
    for check in ["SubscriptionFilterReady", "WorkersAvailable"] {
        wait_for(&ns, "app", check, SETTLE, |l| {
            (condition(l, check)?.0 == "True").then_some(())
        })
        .await;
    }
    let (bindings, accounts, configs) = (
        ns.api::<RoleBinding>(),
        ns.api::<ServiceAccount>(),
        ns.api::<ConfigMap>(),
    );
    let tenant: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "tenant"}})).unwrap();
    accounts
        .create(&Default::default(), &tenant)
        .await
        .expect("the tenant's ServiceAccount");
    let binding = bindings.get("app-worker-leases").await.unwrap();
    let config = configs.get("app-worker").await.unwrap();
    let edit = |v: serde_json::Value| Patch::Merge(v);

    let mut subjects = serde_json::to_value(&binding.subjects).unwrap();
    subjects
        .as_array_mut()
        .unwrap()
        .push(json!({"kind": "ServiceAccount", "name": "tenant", "namespace": ns.name}));
    // The edit's own answer proves it took: asking the API server whether the
    // tenant may now write Leases would race the controller's next refresh.
    let edited = bindings
        .patch(
            "app-worker-leases",
            &PatchParams::default(),
            &edit(json!({"subjects": subjects})),
        )
        .await
        .expect("the tenant edits the binding");
    assert!(
        edited.subjects.iter().flatten().any(|s| s.name == "tenant"),
        "{edited:?}"
    );
    eventually(
        "the tenant off the workers' binding",
        Duration::from_secs(30),
        || async {
            let b = bindings.get("app-worker-leases").await.ok()?;
            (b.subjects == binding.subjects).then_some(())
        },
    )
    .await;
    assert!(!can_i(&ns.name, "tenant", "update", "leases", &ns.name));

    let annotations =
        json!({"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/tenant"});
    accounts
        .patch(
            "app-worker",
            &PatchParams::default(),
            &edit(json!({"metadata": {"annotations": annotations}})),
        )
        .await
        .expect("the tenant edits the ServiceAccount");
    eventually(
        "the workers' role back",
        Duration::from_secs(30),
        || async {
            let a = accounts.get("app-worker").await.ok()?;
            let role = a
                .metadata
                .annotations?
                .get("eks.amazonaws.com/role-arn")?
                .clone();
            (role == ROLE).then_some(())
        },
    )
    .await;

    configs
        .patch(
            "app-worker",
            &PatchParams::default(),
            &edit(json!({"data": {"worker.yaml": "sink: {elsewhere: true}\n"}})),
        )
        .await
        .expect("the tenant edits the ConfigMap");
    eventually(
        "the workers' configuration back",
        Duration::from_secs(30),
        || async {
            let c = configs.get("app-worker").await.ok()?;
            (c.data == config.data).then_some(())
        },
    )
    .await;
    delete_all(&ns).await;
    ns.delete().await;
}

/// GitOps: every example, applied server-side and reconciled by the
/// controller (finalizer added, status written), shows no drift in
/// `kubectl diff --server-side`, so Argo CD and Flux see it in sync.
#[tokio::test]
async fn reconciled_examples_show_no_drift() {
    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    let kubeconfig = identity(&ns).await;
    let _controller = start(&ns, &kubeconfig, "10s");
    let mut names = Vec::new();
    let mut manifests = Vec::new();
    for entry in std::fs::read_dir(common::repo().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        // LogSubscriptions only (examples/policies/ holds policies).
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap();
        let mut doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        // Into this test's namespace; no workers, whose pods would need the sinks.
        doc["metadata"]["namespace"] = json!(ns.name);
        doc["spec"]["workers"]["replicas"] = json!(0);
        let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
        ns.api::<LogSubscription>()
            .patch(
                &name,
                &PatchParams::apply("kubectl").force(),
                &Patch::Apply(&doc),
            )
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        names.push(name);
        manifests.push(doc);
    }
    for name in &names {
        wait_for(&ns, name, "reconciled", SETTLE, |l| {
            let reconciled = l.status.as_ref()?.observed_generation == l.metadata.generation
                && l.metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .any(|f| f.starts_with("logsub.io/"));
            reconciled.then_some(())
        })
        .await;
    }
    let file = std::env::temp_dir().join(format!("{}-examples.yaml", ns.name));
    let yaml: Vec<String> = manifests
        .iter()
        .map(|m| serde_saphyr::to_string(m).unwrap())
        .collect();
    std::fs::write(&file, yaml.join("---\n")).unwrap();
    let diff = stack().kubectl(&["diff", "--server-side", "-f", file.to_str().unwrap()]);
    assert_eq!(
        diff.status.code(),
        Some(0),
        "drift after reconcile:\n{}{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );
    delete_all(&ns).await;
    ns.delete().await;
}

/// With `--selector`, a controller reconciles only the LogSubscriptions with
/// those labels: another controller's, in the same namespace, gets no
/// finalizer, status or filter from it, and that other controller, leading
/// through a Lease of its own, takes it. A selector that does not parse stops
/// the controller at its start, saying so.
#[tokio::test]
async fn a_selector_keeps_a_controller_to_its_own_subscriptions() {
    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    let kubeconfig = identity(&ns).await;
    let (logs, kinesis) = clients().await;
    let (stream, _) = active_stream(&kinesis, "selector", 1).await;
    let (mine_group, theirs_group) = (
        format!("/{}", unique("selector-mine")),
        format!("/{}", unique("selector-theirs")),
    );
    log_group(&logs, &mine_group).await;
    log_group(&logs, &theirs_group).await;

    let bad = tokio::process::Command::new(env!("CARGO_BIN_EXE_logsub"))
        .args([
            "controller",
            "--namespace",
            &ns.name,
            "--leader-election",
            "false",
        ])
        .args([
            "--selector",
            "logsub.io/instance in (mine",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .envs(stack().child_env())
        .env("KUBECONFIG", &kubeconfig)
        .output();
    let bad = tokio::time::timeout(SETTLE, bad)
        .await
        .expect("a bad selector ends the controller")
        .expect("run the controller");
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && said.contains("--selector"),
        "{said}"
    );

    let _controller = start_with(
        &ns,
        &kubeconfig,
        "10s",
        &["--selector", "logsub.io/instance=mine"],
    );
    let existing = json!({"existing": {"name": stream}});
    let mut mine = without_workers("mine", json!({"names": [mine_group]}), existing.clone());
    mine["metadata"]["labels"] = json!({"logsub.io/instance": "mine"});
    create(&ns, mine).await;
    let mut theirs = without_workers("theirs", json!({"names": [theirs_group]}), existing);
    theirs["metadata"]["labels"] = json!({"logsub.io/instance": "theirs"});
    create(&ns, theirs).await;

    wait_for(&ns, "mine", "filter Active", SETTLE, |l| {
        (group_states(l).get(&mine_group) == Some(&FilterState::Active)).then_some(())
    })
    .await;
    let theirs = ns.api::<LogSubscription>().get("theirs").await.unwrap();
    assert!(
        theirs.metadata.finalizers.is_none() && theirs.status.is_none(),
        "another controller's LogSubscription is not touched: {:?}",
        theirs.metadata
    );
    assert!(
        filters(&logs, &theirs_group).await.is_empty(),
        "no filter on the other's log group"
    );

    // The other install, in the same namespace, leads through a Lease of
    // its own and takes its LogSubscription.
    let _theirs = start_with(
        &ns,
        &kubeconfig,
        "10s",
        &[
            "--selector",
            "logsub.io/instance=theirs",
            "--leader-election-id",
            "logsub-theirs",
        ],
    );
    wait_for(&ns, "theirs", "filter Active", SETTLE, |l| {
        (group_states(l).get(&theirs_group) == Some(&FilterState::Active)).then_some(())
    })
    .await;
    delete_all(&ns).await;
    ns.delete().await;
}
