//! `logsub controller` end to end on the stack: the controller runs as its own
//! process with a ServiceAccount's rights only; the worker pods it creates run
//! on the local node; CloudWatch Logs and Kinesis are the AWS emulator's, and
//! documents land in OpenSearch.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_cloudwatchlogs::Client as Logs;
use aws_sdk_kinesis::Client as Kinesis;
use common::controller::{aws_secret, condition, create, identity, start, wait_for};
use common::search::count;
use common::{TestNamespace, active_stream, eventually, stack, unique};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
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
    logs.create_log_group()
        .log_group_name(name)
        .send()
        .await
        .expect("create log group");
    logs.create_log_stream()
        .log_group_name(name)
        .log_stream_name("app-1")
        .send()
        .await
        .expect("create log stream");
}

/// The filters on `group`, by name: (pattern, destination, role).
async fn filters(logs: &Logs, group: &str) -> BTreeMap<String, (String, String, String)> {
    logs.describe_subscription_filters()
        .log_group_name(group)
        .send()
        .await
        .expect("describe filters")
        .subscription_filters()
        .iter()
        .map(|f| {
            (
                f.filter_name().unwrap_or_default().to_owned(),
                (
                    f.filter_pattern().unwrap_or_default().to_owned(),
                    f.destination_arn().unwrap_or_default().to_owned(),
                    f.role_arn().unwrap_or_default().to_owned(),
                ),
            )
        })
        .collect()
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

async fn put_events(logs: &Logs, group: &str, messages: &[String]) {
    let now = logsub::time::now_millis();
    let events = messages.iter().enumerate().map(|(i, m)| {
        aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
            .timestamp(now + i64::try_from(i).unwrap())
            .message(m)
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

    let ours = format!("logsub-{}-app", ns.name);
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
    // The workers' objects, owned by the LogSubscription.
    let name = "app-worker";
    assert!(
        ns.api::<ServiceAccount>()
            .get_opt(name)
            .await
            .unwrap()
            .is_some()
    );
    assert!(ns.api::<Role>().get_opt(name).await.unwrap().is_some());
    assert!(
        ns.api::<RoleBinding>()
            .get_opt(name)
            .await
            .unwrap()
            .is_some()
    );
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
    put_events(&logs, &a, &messages[..20]).await;
    put_events(&logs, &b, &messages[20..]).await;
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
        controller
            .metric("logsub_controller_reconciles_total", &["result=\"ok\""])
            .await
            > 0.0
    );
    drop(controller);
    ns.delete().await;
}
