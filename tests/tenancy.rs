//! Tenancy on the stack: LogSubscriptionPolicies decide what each namespace's
//! LogSubscriptions may do. Each test plays a tenant trying to reach what its
//! policy does not allow, against a controller with the least-privilege
//! identity of `logsub rbac`; the namespaces carry `OWN_POLICIES`, so only
//! the policies written here select them.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_cloudwatchlogs::Client as Logs;
use common::controller::{
    aws_secret, can_i, condition, create, delete_all, failed_for, filters, identity, start,
    wait_for,
};
use common::search::count;
use common::{OWN_POLICIES, TestNamespace, active_stream, eventually, stack, unique};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use logsub::api::{FilterState, LogSubscription, LogSubscriptionPolicy};
use serde_json::{Value, json};

const ROLE: &str = "arn:aws:iam::123456789012:role/CWLtoKinesis";
const SETTLE: Duration = Duration::from_secs(120);

/// Applies the policy `name` with `spec`.
async fn policy(client: &kube::Client, name: &str, spec: Value) {
    let policy: LogSubscriptionPolicy = serde_json::from_value(json!({
        "apiVersion": "logsub.io/v1alpha1",
        "kind": "LogSubscriptionPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a policy");
    Api::<LogSubscriptionPolicy>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply("logsub-tests").force(),
            &Patch::Apply(&policy),
        )
        .await
        .expect("apply the policy");
}

async fn remove_policy(client: &kube::Client, name: &str) {
    let _ = Api::<LogSubscriptionPolicy>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// The names of the filters on `group`, in order.
async fn filter_names(logs: &Logs, group: &str) -> Vec<String> {
    filters(logs, group).await.into_keys().collect()
}

/// The filters on `group`: name → destination.
async fn destinations(logs: &Logs, group: &str) -> BTreeMap<String, String> {
    filters(logs, group)
        .await
        .into_iter()
        .map(|(name, (_, destination, _))| (name, destination))
        .collect()
}

fn lsub(name: &str, groups: Value, stream: Value, sink: Value, workers: Value) -> Value {
    json!({
        "apiVersion": "logsub.io/v1alpha1",
        "kind": "LogSubscription",
        "metadata": {"name": name},
        "spec": {
            "source": {"logGroups": groups, "roleArn": ROLE, "rescanInterval": "30s"},
            "stream": stream,
            "sink": sink,
            "workers": workers,
        }
    })
}

fn group_state(l: &LogSubscription, group: &str) -> Option<FilterState> {
    l.status
        .as_ref()?
        .log_groups
        .iter()
        .find(|g| g.name == group)
        .map(|g| g.filter)
}

/// team-a may use only `/<run>/team-a/` log groups, its own stream and one
/// sink host. Each attack of a tenant is refused with the field named, and
/// nothing of it reaches AWS or runs; a namespace no policy selects may do
/// nothing at all.
#[tokio::test]
async fn a_tenant_gets_only_what_its_policy_allows() {
    let client = stack().kube().await;
    common::install_crd(&client).await;
    let team_a = TestNamespace::labelled(&client, "team-a", &[(OWN_POLICIES, "true")]).await;
    let team_b = TestNamespace::labelled(&client, "team-b", &[(OWN_POLICIES, "true")]).await;
    let aws = stack().aws().await;
    let logs = Logs::new(&aws);
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    let (stream_a, _) = active_stream(&kinesis, "team-a", 1).await;
    let (_, arn_b) = active_stream(&kinesis, "team-b", 1).await;
    let run = unique("tenancy");
    let (ours, theirs) = (format!("/{run}/team-a/api"), format!("/{run}/team-b/api"));
    for g in [&ours, &theirs] {
        common::controller::log_group(&logs, g, "s").await;
    }
    let search = stack().var("OPENSEARCH_URL").to_owned();
    let name = unique("team-a");
    policy(
        &client,
        &name,
        json!({
            "namespaces": {"names": [team_a.name]},
            "logGroups": {"prefixes": [format!("/{run}/team-a/")]},
            "streams": {"existing": [stream_a]},
            "sinks": {"elasticsearch": [{"endpoint": search}]},
            "roles": {"delivery": [ROLE]},
        }),
    )
    .await;
    let _a = start(&team_a, &identity(&team_a).await, "10s");
    let _b = start(&team_b, &identity(&team_b).await, "10s");

    let none = json!({"replicas": 0});
    let sink = json!({"elasticsearch": {"endpoint": search, "index": "team-a"}});
    let stream = json!({"existing": {"name": stream_a}});
    // Pattern `.`: every log group of the account, narrowed to team-a's.
    create(
        &team_a,
        lsub(
            "everything",
            json!({"pattern": "."}),
            stream.clone(),
            sink.clone(),
            none.clone(),
        ),
    )
    .await;
    // A named group of team-b's: shown NotPermitted, never subscribed.
    create(
        &team_a,
        lsub(
            "named",
            json!({"names": [ours, theirs]}),
            stream.clone(),
            sink.clone(),
            none.clone(),
        ),
    )
    .await;
    // team-b's stream, another host, an endpoint in the workers' environment,
    // an API key over http.
    let refused = [
        (
            "their-stream",
            lsub(
                "their-stream",
                json!({"names": [ours]}),
                json!({"existing": {"arn": arn_b}}),
                sink.clone(),
                none.clone(),
            ),
            "spec.stream.existing.arn",
        ),
        (
            "other-host",
            lsub(
                "other-host",
                json!({"names": [ours]}),
                stream.clone(),
                json!({"elasticsearch": {"endpoint": "http://127.0.0.2:9200", "index": "team-a"}}),
                none.clone(),
            ),
            "spec.sink.elasticsearch.endpoint",
        ),
        (
            "env-endpoint",
            lsub(
                "env-endpoint",
                json!({"names": [ours]}),
                stream.clone(),
                sink.clone(),
                json!({"replicas": 1, "env": [{"name": "AWS_ENDPOINT_URL_KINESIS", "value": "http://127.0.0.2:4566"}]}),
            ),
            "spec.workers.env[0]",
        ),
        (
            "key-over-http",
            lsub(
                "key-over-http",
                json!({"names": [ours]}),
                stream.clone(),
                json!({"elasticsearch": {"endpoint": search, "index": "team-a", "auth": {"apiKey": {"secretRef": {"name": "key"}}}}}),
                json!({"replicas": 1}),
            ),
            "spec.sink.elasticsearch.auth",
        ),
    ];
    for (_, spec, _) in &refused {
        create(&team_a, spec.clone()).await;
    }
    create(
        &team_b,
        lsub(
            "anything",
            json!({"names": [theirs]}),
            json!({"existing": {"arn": arn_b}}),
            json!({"s3": {"bucket": "team-b-logs"}}),
            none.clone(),
        ),
    )
    .await;

    let everything = wait_for(&team_a, "everything", "filters ready", SETTLE, |l| {
        (condition(l, "SubscriptionFilterReady")?.0 == "True").then(|| l.clone())
    })
    .await;
    let status = everything.status.unwrap();
    assert_eq!(status.log_group_count, Some(1), "{:?}", status.log_groups);
    assert_eq!(status.log_groups[0].name, ours);
    let named = wait_for(
        &team_a,
        "named",
        "the named group of team-b NotPermitted",
        SETTLE,
        |l| {
            (group_state(l, &theirs)? == FilterState::NotPermitted
                && group_state(l, &ours)? == FilterState::Active)
                .then(|| l.clone())
        },
    )
    .await;
    assert_eq!(condition(&named, "Ready").unwrap().1, "NotPermitted");
    for (lsub, _, field) in &refused {
        let message = wait_for(&team_a, lsub, "NotPermitted", SETTLE, |l| {
            failed_for(l, "Permitted", "NotPermitted")
        })
        .await;
        assert!(
            message.starts_with(&format!(
                "{field}: not allowed by LogSubscriptionPolicy {name}"
            )),
            "{lsub}: {message}"
        );
    }
    let message = wait_for(&team_b, "anything", "NotPermitted", SETTLE, |l| {
        failed_for(l, "Permitted", "NotPermitted")
    })
    .await;
    assert!(
        message.contains("no LogSubscriptionPolicy selects"),
        "{message}"
    );
    // What AWS holds: team-a's two permitted filters on its own group only.
    assert_eq!(
        filter_names(&logs, &ours).await,
        [
            format!("logsub/{}/everything", team_a.name),
            format!("logsub/{}/named", team_a.name)
        ]
    );
    assert!(
        filter_names(&logs, &theirs).await.is_empty(),
        "team-b's group is untouched"
    );
    let deployments = team_a.api::<Deployment>();
    assert!(
        deployments
            .get_opt("key-over-http-worker")
            .await
            .unwrap()
            .is_none()
    );

    delete_all(&team_a).await;
    delete_all(&team_b).await;
    remove_policy(&client, &name).await;
    team_a.delete().await;
    team_b.delete().await;
}

/// A policy that stops allowing a LogSubscription takes its filters off and
/// stops its workers, and says why; restored, delivery resumes from the
/// checkpoints with nothing lost and nothing twice.
#[tokio::test]
async fn a_withdrawn_policy_stops_delivery_and_restoring_it_resumes() {
    let client = stack().kube().await;
    common::install_crd(&client).await;
    let ns = TestNamespace::labelled(&client, "tenant", &[(OWN_POLICIES, "true")]).await;
    let aws = stack().aws().await;
    let logs = Logs::new(&aws);
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    let (stream, _) = active_stream(&kinesis, "withdrawn", 1).await;
    let group = format!("/{}/app", unique("withdrawn"));
    common::controller::log_group(&logs, &group, "app-1").await;
    let search = stack().var("OPENSEARCH_URL").to_owned();
    let index = unique("withdrawn");
    let name = unique("tenant");
    let allowing = |endpoint: &str| {
        json!({
            "namespaces": {"selector": {"matchLabels": {"kubernetes.io/metadata.name": ns.name}}},
            "logGroups": {"names": [group]},
            "streams": {"existing": [stream]},
            "sinks": {"elasticsearch": [{"endpoint": endpoint}]},
            "roles": {"delivery": [ROLE]},
            // The stack's credentials and its AWS endpoint: trusted here.
            "workers": {"env": ["*"]},
        })
    };
    policy(&client, &name, allowing(&search)).await;
    let env = aws_secret(&ns).await;
    let _controller = start(&ns, &identity(&ns).await, "10s");
    create(
        &ns,
        lsub(
            "app",
            json!({"names": [group]}),
            json!({"existing": {"name": stream}}),
            json!({"elasticsearch": {"endpoint": search, "index": index}}),
            json!({"replicas": 1, "env": env, "batch": {"maxWait": "200ms"}}),
        ),
    )
    .await;
    let ready = || {
        wait_for(&ns, "app", "Ready", SETTLE, |l| {
            (condition(l, "Ready")? == ("True".into(), "Ready".into())).then_some(())
        })
    };
    ready().await;
    let put = |from: usize| {
        let messages: Vec<String> = (from..from + 20).map(|i| format!("event {i}")).collect();
        let logs = logs.clone();
        let group = group.clone();
        async move {
            common::controller::put_events(&logs, &group, "app-1", &messages).await;
        }
    };
    put(0).await;
    let delivered = |n: u64| {
        let (search, index) = (search.clone(), index.clone());
        eventually("documents delivered", SETTLE, move || {
            let (search, index) = (search.clone(), index.clone());
            async move { (count(&search, &index).await == n).then_some(()) }
        })
    };
    delivered(20).await;

    // The sink host is no longer allowed.
    policy(&client, &name, allowing("https://search.elsewhere.example")).await;
    let message = wait_for(&ns, "app", "NotPermitted", SETTLE, |l| {
        failed_for(l, "Permitted", "NotPermitted")
    })
    .await;
    assert!(
        message.starts_with("spec.sink.elasticsearch.endpoint"),
        "{message}"
    );
    let ours = format!("logsub/{}/app", ns.name);
    // Nothing of it runs: its filter is off the group and its workers are gone.
    let stopped = |what: &'static str| {
        eventually(what, SETTLE, || async {
            let filtered = filter_names(&logs, &group).await.contains(&ours);
            let workers = ns.api::<Deployment>().get_opt("app-worker").await.ok()?;
            (!filtered && workers.is_none()).then_some(())
        })
    };
    stopped("the filter removed and the workers stopped").await;

    policy(&client, &name, allowing(&search)).await;
    ready().await;
    assert!(filter_names(&logs, &group).await.contains(&ours));
    put(20).await;
    // Each document's id is its event's: 40 documents are the 40 events, once each.
    delivered(40).await;

    // The policy deleted and applied again, as GitOps may replace one: the
    // filter stays through the gap, and what is logged meanwhile arrives.
    remove_policy(&client, &name).await;
    let message = wait_for(&ns, "app", "no policy selects it", SETTLE, |l| {
        failed_for(l, "Permitted", "NotPermitted")
    })
    .await;
    assert!(
        message.contains("no LogSubscriptionPolicy selects"),
        "{message}"
    );
    put(40).await;
    assert!(
        filter_names(&logs, &group).await.contains(&ours),
        "the filter stays within the grace period"
    );
    policy(&client, &name, allowing(&search)).await;
    ready().await;
    delivered(60).await;

    // A spec that passes the schema but not validation cannot be authorized:
    // nothing of it runs, so no later policy change can be dodged that way.
    ns.api::<LogSubscription>()
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"source": {"rescanInterval": "10s"}}})),
        )
        .await
        .expect("an invalid spec");
    wait_for(&ns, "app", "InvalidSpec", SETTLE, |l| {
        (condition(l, "Ready")?.1 == "InvalidSpec").then_some(())
    })
    .await;
    stopped("an invalid spec's filter removed and its workers stopped").await;

    delete_all(&ns).await;
    remove_policy(&client, &name).await;
    ns.delete().await;
}

/// Filter names of earlier releases collide (`a-b`/`c` and `a`/`b-c` were
/// both `logsub-a-b-c`). Today's cannot: the two tenants keep two
/// independent filters through resyncs and the deletion of one. A filter of
/// the earlier name toward a stream that does not prove whose it is (an
/// existing one) is left alone by both, and the one it blocks says so.
#[tokio::test]
async fn colliding_names_keep_two_independent_filters() {
    let client = stack().kube().await;
    common::install_crd(&client).await;
    let run = unique("clash");
    let first = TestNamespace::named(&client, &format!("{run}-a-b"), &[]).await;
    let second = TestNamespace::named(&client, &format!("{run}-a"), &[]).await;
    let aws = stack().aws().await;
    let logs = Logs::new(&aws);
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    let (stream_x, arn_x) = active_stream(&kinesis, "clash-x", 1).await;
    let (stream_y, arn_y) = active_stream(&kinesis, "clash-y", 1).await;
    let group = format!("/{run}/shared");
    common::controller::log_group(&logs, &group, "s").await;
    // What an earlier version left for the second tenant: its filter under
    // the name both tenants had then.
    let legacy = format!("logsub-{run}-a-b-c");
    logs.put_subscription_filter()
        .log_group_name(&group)
        .filter_name(&legacy)
        .filter_pattern("")
        .destination_arn(&arn_y)
        .role_arn(ROLE)
        .send()
        .await
        .expect("the earlier version's filter");
    let (first_filter, second_filter) = (
        format!("logsub/{}/c", first.name),
        format!("logsub/{}/b-c", second.name),
    );

    let _first = start(&first, &identity(&first).await, "5s");
    let none = json!({"replicas": 0});
    let sink = json!({"s3": {"bucket": "unused"}});
    let names = json!({"names": [group]});
    create(
        &first,
        lsub(
            "c",
            names.clone(),
            json!({"existing": {"name": stream_x}}),
            sink.clone(),
            none.clone(),
        ),
    )
    .await;
    wait_for(&first, "c", "the first tenant's filter", SETTLE, |l| {
        (group_state(l, &group)? == FilterState::Active).then_some(())
    })
    .await;
    // The earlier filter sends to the other tenant's stream: not the first's.
    assert_eq!(
        destinations(&logs, &group).await,
        BTreeMap::from([
            (legacy.clone(), arn_y.clone()),
            (first_filter.clone(), arn_x.clone())
        ])
    );

    let second_controller = start(&second, &identity(&second).await, "5s");
    create(
        &second,
        lsub(
            "b-c",
            names.clone(),
            json!({"existing": {"name": stream_y}}),
            sink.clone(),
            none.clone(),
        ),
    )
    .await;
    // The earlier filter sends to an existing stream, which proves nothing
    // of whose it is: the second leaves it alone and says why, as the group's
    // two slots are taken.
    let ambiguous = wait_for(&second, "b-c", "the second tenant blocked", SETTLE, |l| {
        (group_state(l, &group)? == FilterState::LimitExceeded).then(|| l.clone())
    })
    .await;
    assert_eq!(
        condition(&ambiguous, "SubscriptionFilterReady"),
        Some(("False".into(), "TooManyFilters".into()))
    );
    let message = ambiguous
        .status
        .as_ref()
        .and_then(|s| s.log_groups.iter().find(|g| g.name == group))
        .and_then(|g| g.message.clone())
        .unwrap_or_default();
    assert!(message.contains(&legacy), "names the filter: {message}");
    let both = BTreeMap::from([
        (legacy.clone(), arn_y.clone()),
        (first_filter.clone(), arn_x.clone()),
    ]);
    assert_eq!(destinations(&logs, &group).await, both);
    // Through two more syncs of the second tenant's AWS state.
    let describes = "logsub_controller_aws_calls_total";
    let label = ["operation=\"DescribeSubscriptionFilters\""];
    let seen = second_controller.metric(describes, &label).await;
    eventually("two more syncs", SETTLE, || async {
        (second_controller.metric(describes, &label).await >= seen + 2.0).then_some(())
    })
    .await;
    assert_eq!(
        destinations(&logs, &group).await,
        both,
        "neither touched it"
    );

    // Removed by hand, as the warning asks, the slot goes to the second's
    // filter of today's name; both tenants hold their own.
    logs.delete_subscription_filter()
        .log_group_name(&group)
        .filter_name(&legacy)
        .send()
        .await
        .expect("remove the earlier filter");
    wait_for(&second, "b-c", "the second tenant's filter", SETTLE, |l| {
        (group_state(l, &group)? == FilterState::Active).then_some(())
    })
    .await;
    assert_eq!(
        destinations(&logs, &group).await,
        BTreeMap::from([
            (second_filter.clone(), arn_y.clone()),
            (first_filter.clone(), arn_x.clone())
        ])
    );

    // Deleting the first tenant's LogSubscription leaves the second's filter.
    delete_all(&first).await;
    assert_eq!(
        destinations(&logs, &group).await,
        BTreeMap::from([(second_filter.clone(), arn_y.clone())])
    );
    delete_all(&second).await;
    assert!(
        destinations(&logs, &group).await.is_empty(),
        "the second tenant's own deletion removes its filter"
    );
    first.delete().await;
    second.delete().await;
}

/// The controller's ClusterRole, bound cluster-wide as the chart does by
/// default: its token cannot write node heartbeats or other components'
/// leader Leases, and may bind only the workers' ClusterRole.
#[tokio::test]
async fn the_controller_cannot_write_leases_it_does_not_manage() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    use logsub::controller::resources::rbac;

    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    // Applies every ClusterRole of `logsub rbac`.
    identity(&ns).await;
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "cluster-wide"}})).expect("account");
    ns.api::<ServiceAccount>()
        .create(&Default::default(), &account)
        .await
        .expect("create the account");
    let binding_name = format!("logsub-controller-{}", ns.name);
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": binding_name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": rbac::CLUSTER_ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": "cluster-wide", "namespace": ns.name}],
    }))
    .expect("binding");
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    bindings
        .create(&Default::default(), &binding)
        .await
        .expect("bind cluster-wide");
    let can = |verb: &str, resource: &str, namespace: &str| {
        can_i(&ns.name, "cluster-wide", verb, resource, namespace)
    };
    for verb in ["create", "update", "patch", "delete"] {
        assert!(
            !can(verb, "leases", "kube-node-lease"),
            "{verb} node leases"
        );
        assert!(
            !can(verb, "leases", "kube-system"),
            "{verb} kube-system leases"
        );
    }
    assert!(can("list", "leases", &ns.name), "reads the workers' health");
    assert!(can(
        "bind",
        &format!("clusterroles/{}", rbac::WORKER_ROLE),
        &ns.name
    ));
    assert!(!can("bind", "clusterroles/cluster-admin", &ns.name));
    assert!(!can("escalate", "clusterroles", &ns.name));
    assert!(!can("create", "roles", &ns.name));
    let _ = bindings
        .delete(&binding_name, &DeleteParams::default())
        .await;
    ns.delete().await;
}

/// Each LogSubscription's AWS calls are made as the role it names, the
/// controller's and its workers' alike. Proved from the emulator's side: a
/// role of another account switches the emulator to that account, where
/// the same log group and stream names are other resources. Each
/// subscription's filter lands on its own account's group, toward its own
/// account's stream, and its workers read that stream; the controller's own
/// account holds none of it.
#[tokio::test]
async fn each_subscription_acts_as_the_role_it_names() {
    use aws_sdk_kinesis::Client as Kinesis;
    use common::controller::put_events;

    let client = stack().kube().await;
    common::install_crd(&client).await;
    let aws = stack().aws().await;
    // STS is served where the other AWS APIs are.
    let sts = aws
        .to_builder()
        .endpoint_url(stack().var("AWS_ENDPOINT_URL_KINESIS"))
        .build();
    let run = unique("roles");
    let group = format!("/{run}/app");
    let search = stack().var("OPENSEARCH_URL").to_owned();
    // One namespace and controller for both: each LogSubscription's workers
    // are Pods of their own, on ports of their own Pods.
    let ns = TestNamespace::new(&client).await;
    let controller = start(&ns, &identity(&ns).await, "10s");
    let mut accounts = Vec::new();
    for (name, account) in [("first", "111111111111"), ("second", "222222222222")] {
        let role = format!("arn:aws:iam::{account}:role/logsub-{run}");
        let assumed = logsub::aws::assuming(&aws, &sts, &role, None, "logsub-tests").await;
        let logs = Logs::new(&assumed);
        common::controller::log_group(&logs, &group, "s").await;
        let arn = common::stream_named(&Kinesis::new(&assumed), &run, 1).await;
        assert!(arn.contains(account), "{arn}");
        accounts.push((name, role, logs, arn));
    }
    let env = aws_secret(&ns).await;
    for (name, role, _, _) in &accounts {
        let mut spec = lsub(
            name,
            json!({"names": [group]}),
            json!({"existing": {"name": run}}),
            json!({"elasticsearch": {"endpoint": search, "index": format!("{run}-{name}")}}),
            json!({"replicas": 1, "env": env, "batch": {"maxWait": "200ms"}}),
        );
        spec["spec"]["aws"] = json!({"roleArn": role});
        create(&ns, spec).await;
    }
    for (name, _, logs, arn) in &accounts {
        let lsub = wait_for(&ns, name, "Ready", SETTLE, |l| {
            (condition(l, "Ready")? == ("True".into(), "Ready".into())).then(|| l.clone())
        })
        .await;
        assert_eq!(
            lsub.status.as_ref().and_then(|s| s.stream_arn.as_deref()),
            Some(arn.as_str())
        );
        assert_eq!(
            destinations(logs, &group).await,
            BTreeMap::from([(format!("logsub/{}/{name}", ns.name), arn.clone())]),
            "{name}: its filter, on its account's group"
        );
    }
    let own = Logs::new(&aws)
        .describe_log_groups()
        .log_group_name_prefix(&group)
        .send()
        .await
        .expect("the controller's own account");
    assert!(
        own.log_groups().is_empty(),
        "nothing in the controller's account"
    );

    // Each account's events reach its subscription's index only.
    for (i, (name, _, logs, ..)) in accounts.iter().enumerate() {
        let messages: Vec<String> = (0..=i).map(|n| format!("{name} {n}")).collect();
        put_events(logs, &group, "s", &messages).await;
    }
    for (i, (name, ..)) in accounts.iter().enumerate() {
        let index = format!("{run}-{name}");
        let want = u64::try_from(i + 1).expect("small");
        eventually("each account's events in its index", SETTLE, || async {
            (count(&search, &index).await == want).then_some(())
        })
        .await;
    }

    // Deletion removes each filter in its own account.
    delete_all(&ns).await;
    for (name, _, logs, _) in accounts {
        assert!(destinations(&logs, &group).await.is_empty(), "{name}");
    }
    drop(controller);
    ns.delete().await;
}
