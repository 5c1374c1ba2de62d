//! Unplanned faults against the whole reconcile (see `fixtures`): the API
//! server answering errors at each call, AWS failing at each step, statuses
//! written by others, names shared with the earlier naming scheme, region
//! changes.

use http::Method;
use serde_json::{Value, json};

use super::fixtures::{
    self, Expect, Paths, Scenario, condition, deleted, failing, first_sync, policy, status_write,
    subscription_in, written,
};
use crate::api::{
    FilterState, LogGroupStatus, LogSubscription, LogSubscriptionPolicy, LogSubscriptionStatus,
};

/// A policy that lets `namespace` subscribe groups under `prefix` into the
/// existing stream `shared`.
pub(super) fn shared_policy(namespace: &str, prefix: &str) -> LogSubscriptionPolicy {
    policy(
        namespace,
        json!({
            "namespaces": {"names": [namespace]},
            "logGroups": {"prefixes": [prefix]},
            "streams": {"existing": ["shared"]},
            "sinks": {"s3": [{"bucket": "logs"}]},
            "roles": {"delivery": ["*"]},
        }),
    )
}

/// `pattern "."` into the existing stream `shared`, to S3.
pub(super) fn spec() -> Value {
    fixtures::into_shared("logs")
}

/// What each request of `first_sync` is: its method.
const FIRST_SYNC_METHODS: [&str; 10] = [
    "GET", "PATCH", "GET", "GET", "GET", "PATCH", "GET", "PATCH", "PATCH", "PATCH",
];

fn first_sync_paths(paths: &Paths) -> [String; 10] {
    [
        paths.binding.clone(),
        paths.binding.clone(),
        paths.leases.clone(),
        paths.deployment.clone(),
        paths.account.clone(),
        paths.account.clone(),
        paths.config.clone(),
        paths.config.clone(),
        paths.deployment.clone(),
        paths.status.clone(),
    ]
}

pub(super) fn filter(name: &str, destination: &str) -> fixtures::FakeFilter {
    fixtures::FakeFilter {
        name: name.into(),
        destination: destination.into(),
    }
}

/// `team-a/app` permitted, its first sync done: filter on `/team-a/api`
/// toward `shared`. Returns the scenario, the LogSubscription with the
/// status written, the stream's ARN and the applied Deployment.
pub(super) async fn synced_team_a() -> (Scenario, LogSubscription, String, Value) {
    let s = Scenario::new(vec![shared_policy("team-a", "/team-a/")], &["team-a"]);
    let stream = s.aws.stream("shared", 2);
    s.aws.group("/team-a/api", &[]);
    let paths = Paths::of("team-a", "app");
    let mut lsub = subscription_in("team-a", "app", spec());
    s.server.expect(first_sync(&paths, &lsub));
    s.reconcile(&lsub).await.expect("reconciled");
    let seen = s.server.verify();
    let deployment = seen.bodies(&Method::PATCH, &paths.deployment)[0].clone();
    lsub.status = Some(written(&seen, &paths));
    assert_eq!(
        s.aws.filters("/team-a/api"),
        vec![filter("logsub/team-a/app", &stream)]
    );
    s.aws.take_calls();
    (s, lsub, stream, deployment)
}

// ------------------------------------------------ the API server failing

/// Every Kubernetes call of a first sync answered 403, 409, 410, 429 or 500
/// in turn: the reconcile fails (retried with backoff), writes nothing after
/// the failed call but the status, and the status it writes claims nothing
/// that is not true (the workers are not available, nothing is Ready).
#[tokio::test]
async fn each_kubernetes_call_of_a_first_sync_failing_claims_nothing_more() {
    for (index, method) in FIRST_SYNC_METHODS.iter().enumerate() {
        for code in [403u16, 409, 410, 429, 500] {
            let s = Scenario::new(vec![shared_policy("team-a", "/team-a/")], &["team-a"]);
            s.aws.stream("shared", 2);
            s.aws.group("/team-a/api", &[]);
            let paths = Paths::of("team-a", "app");
            let lsub = subscription_in("team-a", "app", spec());
            let method: Method = method.parse().expect("method");
            let path = first_sync_paths(&paths)[index].clone();
            let mut script = first_sync(&paths, &lsub);
            script.truncate(index);
            script.push(failing(method.clone(), &path, code));
            let status_failed = index == FIRST_SYNC_METHODS.len() - 1;
            if !status_failed {
                script.push(status_write(&paths, &lsub));
            }
            s.server.expect(script);

            let result = s.reconcile(&lsub).await;

            let what = format!("{method} {path} answering {code}");
            assert!(result.is_err(), "{what}: the reconcile must be retried");
            let seen = s.server.verify();
            if status_failed {
                continue;
            }
            let status = written(&seen, &paths);
            assert_eq!(condition(&status, "Ready").0, "False", "{what}");
            assert_ne!(condition(&status, "WorkersAvailable").0, "True", "{what}");
            assert_ne!(condition(&status, "Delivering").0, "True", "{what}");
            // What the API server refuses (403, 409) waits for a change; the
            // rest is on its way again.
            let (workers, reason) = condition(&status, "WorkersAvailable");
            if matches!(code, 403 | 409) {
                assert_eq!((workers, reason), ("False", "WorkersRefused"), "{what}");
            } else {
                assert_eq!(
                    (workers, reason),
                    ("Unknown", "WorkersUnavailable"),
                    "{what}"
                );
            }
        }
    }
}

/// The status write failing after the filters were put: the next reconcile
/// finds a LogSubscription whose status names no stream. A withdrawal then
/// must still take the filters it put off.
#[tokio::test]
async fn a_withdrawal_after_a_failed_status_write_takes_the_filters_off() {
    let mut s = Scenario::new(vec![shared_policy("team-a", "/team-a/")], &["team-a"]);
    s.aws.stream("shared", 2);
    s.aws.group("/team-a/api", &[]);
    let paths = Paths::of("team-a", "app");
    let lsub = subscription_in("team-a", "app", spec());
    let mut script = first_sync(&paths, &lsub);
    script.pop();
    script.push(failing(Method::PATCH, &paths.status, 500));
    s.server.expect(script);
    s.reconcile(&lsub)
        .await
        .expect_err("the status write failed");
    let seen = s.server.verify();
    let deployment = seen.bodies(&Method::PATCH, &paths.deployment)[0].clone();
    assert_eq!(s.aws.filters("/team-a/api").len(), 1);

    // No policy permits it any more; its status was never written.
    s.policies.set(Vec::new());
    s.server.expect(vec![
        Expect::get(paths.deployment.clone(), deployment),
        deleted(&paths.deployment),
        status_write(&paths, &lsub),
    ]);
    s.reconcile(&lsub).await.expect("reconciled");
    let seen = s.server.verify();
    let status = written(&seen, &paths);
    assert_eq!(condition(&status, "Ready"), ("False", "NotPermitted"));
    assert_eq!(
        s.aws.filters("/team-a/api"),
        Vec::new(),
        "the filter the controller put toward its stream is still delivering"
    );
}

/// The same, deleted instead of withdrawn: its filters must come off.
#[tokio::test]
async fn a_deletion_after_a_failed_status_write_takes_the_filters_off() {
    let s = Scenario::new(vec![shared_policy("team-a", "/team-a/")], &["team-a"]);
    s.aws.stream("shared", 2);
    s.aws.group("/team-a/api", &[]);
    let paths = Paths::of("team-a", "app");
    let mut lsub = subscription_in("team-a", "app", spec());
    let mut script = first_sync(&paths, &lsub);
    script.pop();
    script.push(failing(Method::PATCH, &paths.status, 500));
    s.server.expect(script);
    s.reconcile(&lsub)
        .await
        .expect_err("the status write failed");
    s.server.verify();

    lsub.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    s.server.expect(fixtures::cleanup(&paths, &lsub, None));
    s.reconcile(&lsub).await.expect("cleaned up");
    s.server.verify();
    assert_eq!(
        s.aws.filters("/team-a/api"),
        Vec::new(),
        "the deleted LogSubscription's filter is still delivering"
    );
}

/// Withdrawn while the workers' Deployment cannot be deleted (500): the
/// filters come off, and the status must say so; it must not go on claiming
/// that the LogSubscription is permitted and its filters active.
#[tokio::test]
async fn a_withdrawal_whose_workers_cannot_be_deleted_still_says_so() {
    let (mut s, lsub, _, deployment) = synced_team_a().await;
    let paths = Paths::of("team-a", "app");
    s.policies.set(Vec::new());
    s.server.expect(vec![
        Expect::get(paths.deployment.clone(), deployment),
        failing(Method::DELETE, &paths.deployment, 500),
        status_write(&paths, &lsub),
    ]);
    let result = s.reconcile(&lsub).await;
    assert!(result.is_err(), "retried");
    assert!(
        s.aws.filters("/team-a/api").is_empty(),
        "the filter came off"
    );
    // What the status says now: it must not claim filters that are gone.
    let seen = s.server.verify();
    let status = written(&seen, &paths);
    assert_eq!(condition(&status, "Permitted").0, "False");
    assert_ne!(condition(&status, "SubscriptionFilterReady").0, "True");
}

/// A spec made invalid after a valid one: its filters come off, its
/// workers stop, the status says why.
#[tokio::test]
async fn an_invalid_spec_after_a_valid_one_takes_the_filters_off_and_stops_the_workers() {
    let (s, mut lsub, stream, deployment) = synced_team_a().await;
    let paths = Paths::of("team-a", "app");
    lsub.spec.stream = serde_json::from_value(
        json!({"existing": {"name": "shared"}, "managed": {"shardCount": 1}}),
    )
    .expect("stream");
    lsub.metadata.generation = Some(2);
    s.server.expect(vec![
        Expect::get(paths.deployment.clone(), deployment),
        deleted(&paths.deployment),
        status_write(&paths, &lsub),
    ]);
    s.reconcile(&lsub).await.expect("reconciled");
    let seen = s.server.verify();
    assert!(s.aws.filters("/team-a/api").is_empty());
    let status = written(&seen, &paths);
    assert_eq!(condition(&status, "Ready"), ("False", "InvalidSpec"));
    assert_eq!(status.log_group_count, Some(0));
    assert!(status.log_groups.is_empty(), "{:?}", status.log_groups);
    // The stream stays named: a valid spec again finds what it used.
    assert_eq!(status.stream_arn.as_deref(), Some(stream.as_str()));
    assert_eq!(seen.events, ["InvalidSpec", "SubscriptionFilterDeleted"]);
}

/// Withdrawn while one group's filter cannot come off (throttled): the
/// others come off, the group left is shown, and it is tried again until it
/// comes off.
#[tokio::test]
async fn a_withdrawal_retries_the_filters_it_could_not_remove() {
    let mut s = Scenario::new(vec![shared_policy("team-a", "/team-a/")], &["team-a"]);
    s.aws.stream("shared", 2);
    s.aws.group("/team-a/api", &[]);
    s.aws.group("/team-a/web", &[]);
    let paths = Paths::of("team-a", "app");
    let mut lsub = subscription_in("team-a", "app", spec());
    s.server.expect(first_sync(&paths, &lsub));
    s.reconcile(&lsub).await.expect("reconciled");
    let seen = s.server.verify();
    let deployment = seen.bodies(&Method::PATCH, &paths.deployment)[0].clone();
    lsub.status = Some(written(&seen, &paths));

    s.policies.set(Vec::new());
    s.aws.fail(
        "DeleteSubscriptionFilter",
        Some("/team-a/web"),
        "ThrottlingException",
        1,
    );
    s.server.expect(vec![
        Expect::get(paths.deployment.clone(), deployment),
        deleted(&paths.deployment),
        status_write(&paths, &lsub),
    ]);
    s.reconcile(&lsub).await.expect("reconciled");
    let seen = s.server.verify();
    assert!(s.aws.filters("/team-a/api").is_empty());
    assert_eq!(s.aws.filters("/team-a/web").len(), 1);
    let status = written(&seen, &paths);
    assert_eq!(
        condition(&status, "SubscriptionFilterReady"),
        ("Unknown", "FiltersRemaining")
    );
    assert_eq!(
        status
            .log_groups
            .iter()
            .map(|g| (g.name.as_str(), g.filter))
            .collect::<Vec<_>>(),
        [("/team-a/web", FilterState::Pending)]
    );
    lsub.status = Some(status);

    // Again (the status lists what is left; the Deployment is gone).
    s.server.expect(vec![
        Expect::missing(paths.deployment.clone()),
        status_write(&paths, &lsub),
    ]);
    s.reconcile(&lsub).await.expect("reconciled");
    let seen = s.server.verify();
    assert!(s.aws.filters("/team-a/web").is_empty());
    let status = written(&seen, &paths);
    assert!(status.log_groups.is_empty());
    assert_eq!(condition(&status, "Ready"), ("False", "NotPermitted"));
}

// ------------------------------------------------ AWS failing

/// Each AWS step of a first sync failing with throttling, AccessDenied,
/// ResourceNotFound or an unknown code: the reconcile goes on, the status
/// says what failed and claims nothing that is not true, nothing is
/// written where the policy does not allow.
#[tokio::test]
async fn each_aws_step_of_a_first_sync_failing_claims_nothing_more() {
    let codes = [
        "ThrottlingException",
        "AccessDeniedException",
        "ResourceNotFoundException",
        "SomethingNobodyKnowsException",
    ];
    for op in [
        "DescribeStreamSummary",
        "DescribeLogGroups",
        "DescribeSubscriptionFilters",
        "PutSubscriptionFilter",
    ] {
        for code in codes {
            let s = Scenario::new(vec![shared_policy("team-a", "/team-a/")], &["team-a"]);
            s.aws.stream("shared", 2);
            s.aws.group("/team-a/api", &[]);
            s.aws.group("/team-b/db", &[]);
            s.aws.fail(op, None, code, 1);
            let paths = Paths::of("team-a", "app");
            let lsub = subscription_in("team-a", "app", spec());
            let stream_fails = op == "DescribeStreamSummary";
            // A stream not found is a stream to wait for; any other failure
            // to describe it leaves it unknown: no workers either way.
            if stream_fails {
                s.server.expect(vec![status_write(&paths, &lsub)]);
            } else {
                s.server.expect(first_sync(&paths, &lsub));
            }

            let what = format!("{op} answering {code}");
            s.reconcile(&lsub).await.expect(&what);

            let seen = s.server.verify();
            let status = written(&seen, &paths);
            assert_eq!(condition(&status, "Ready").0, "False", "{what}");
            assert_ne!(
                condition(&status, "SubscriptionFilterReady").0,
                "True",
                "{what}: {:?}",
                status.conditions
            );
            if stream_fails {
                assert_ne!(condition(&status, "StreamReady").0, "True", "{what}");
                assert_eq!(status.stream_arn, None, "{what}");
            }
            assert!(s.aws.filters("/team-b/db").is_empty(), "{what}");
            let memo = s.ctx.memory.get("uid-team-a.app");
            // What retrying can help is retried soon; the rest waits (a
            // group found gone waits for the next rescan).
            let soon = match code {
                "ThrottlingException" => true,
                "ResourceNotFoundException" => op != "DescribeSubscriptionFilters",
                _ => false,
            };
            assert_eq!(memo.retry_at.is_some(), soon, "{what}");
        }
    }
}

/// A log group deleted between the listing and the put: shown as pending,
/// retried soon, never shown active.
#[tokio::test]
async fn a_group_gone_between_listing_and_put_is_pending_and_retried() {
    let s = Scenario::new(vec![shared_policy("team-a", "/team-a/")], &["team-a"]);
    s.aws.stream("shared", 2);
    s.aws.group("/team-a/api", &[]);
    s.aws.group("/team-a/gone", &[]);
    s.aws.fail(
        "PutSubscriptionFilter",
        Some("/team-a/gone"),
        "ResourceNotFoundException",
        1,
    );
    let paths = Paths::of("team-a", "app");
    let lsub = subscription_in("team-a", "app", spec());
    s.server.expect(first_sync(&paths, &lsub));
    s.reconcile(&lsub).await.expect("reconciled");
    let seen = s.server.verify();
    let status = written(&seen, &paths);
    let rows: Vec<_> = status
        .log_groups
        .iter()
        .map(|g| (g.name.as_str(), g.filter))
        .collect();
    assert_eq!(
        rows,
        [
            ("/team-a/api", FilterState::Active),
            ("/team-a/gone", FilterState::Pending)
        ]
    );
    assert_eq!(
        condition(&status, "SubscriptionFilterReady"),
        ("Unknown", "FiltersPending")
    );
    assert!(s.ctx.memory.get("uid-team-a.app").retry_at.is_some());
}

// ------------------------------------------------ others' filters

/// `a/b-c` and `a-b/c` share the earlier name `logsub-a-b-c`. The status of
/// `a/b-c` is written by someone else to name `a-b/c`'s stream and a group
/// `a-b/c` subscribes under that earlier name. Withdrawing `a/b-c` must not
/// remove `a-b/c`'s filter.
#[tokio::test]
async fn a_forged_status_does_not_make_a_withdrawal_remove_anothers_filter() {
    let mut s = Scenario::new(Vec::new(), &["a", "a-b"]);
    s.others.set(&[&subscription_in("a-b", "c", spec())]);
    let theirs = s.aws.stream("logsub_a-b_c", 2);
    s.aws.group("/a-b/db", &[("logsub-a-b-c", theirs.as_str())]);
    let paths = Paths::of("a", "b-c");
    let mut lsub = subscription_in("a", "b-c", spec());
    lsub.status = Some(LogSubscriptionStatus {
        stream_arn: Some(theirs.clone()),
        log_groups: vec![LogGroupStatus {
            name: "/a-b/db".into(),
            filter: FilterState::Active,
            message: None,
        }],
        ..LogSubscriptionStatus::default()
    });
    s.server.expect(vec![
        Expect::missing(paths.deployment.clone()),
        status_write(&paths, &lsub),
    ]);
    s.reconcile(&lsub).await.expect("reconciled");
    s.server.verify();
    assert_eq!(
        s.aws.filters("/a-b/db"),
        vec![filter("logsub-a-b-c", &theirs)],
        "a-b/c's filter was removed on a status a-b/c never wrote"
    );
}

/// The same forged status on a permitted `a/b-c` whose selection holds the
/// group: `a-b/c`'s filter must not be renamed to (taken over by) `a/b-c`.
#[tokio::test]
async fn a_forged_status_does_not_make_a_sync_take_anothers_filter() {
    let mut s = Scenario::new(vec![shared_policy("a", "/a/")], &["a", "a-b"]);
    s.others.set(&[&subscription_in("a-b", "c", spec())]);
    s.aws.stream("shared", 2);
    let theirs = s.aws.stream("logsub_a-b_c", 2);
    s.aws.group("/a/web", &[("logsub-a-b-c", theirs.as_str())]);
    let paths = Paths::of("a", "b-c");
    let mut lsub = subscription_in("a", "b-c", spec());
    lsub.status = Some(LogSubscriptionStatus {
        stream_arn: Some(theirs.clone()),
        ..LogSubscriptionStatus::default()
    });
    s.server.expect(first_sync(&paths, &lsub));
    s.reconcile(&lsub).await.expect("reconciled");
    s.server.verify();
    let filters = s.aws.filters("/a/web");
    assert!(
        filters.contains(&filter("logsub-a-b-c", &theirs)),
        "a-b/c's filter was taken: {filters:?}"
    );
}

/// Without any forged status: `a/b-c` and `a-b/c` both use the existing
/// stream `shared`, and `a-b/c` subscribed `/a/web` under the earlier name.
/// Its filter sends to the stream `a/b-c` wants, which proves nothing about
/// whose it is: `a/b-c` must not take it.
#[tokio::test]
async fn a_legacy_filter_of_another_on_a_shared_stream_is_not_taken() {
    let mut s = Scenario::new(vec![shared_policy("a", "/a/")], &["a", "a-b"]);
    s.others.set(&[&subscription_in("a-b", "c", spec())]);
    let shared = s.aws.stream("shared", 2);
    s.aws.group("/a/web", &[("logsub-a-b-c", shared.as_str())]);
    let paths = Paths::of("a", "b-c");
    let lsub = subscription_in("a", "b-c", spec());
    s.server.expect(first_sync(&paths, &lsub));
    s.reconcile(&lsub).await.expect("reconciled");
    let seen = s.server.verify();
    let filters = s.aws.filters("/a/web");
    assert!(
        filters.contains(&filter("logsub-a-b-c", &shared)),
        "a-b/c's filter was taken: {filters:?}"
    );
    // Ours is put beside it, and the user is told why the other stays.
    assert!(filters.contains(&filter("logsub/a/b-c", &shared)));
    assert!(
        seen.events.iter().any(|e| e.contains("AmbiguousFilter")),
        "{:?}",
        seen.events
    );
}

/// The same filter under a controller of a label selector, which sees none
/// of the LogSubscriptions outside it: `a-b/c` may be one of those, so the
/// filter is not taken though none of that earlier name is seen.
#[tokio::test]
async fn a_controller_of_a_selector_takes_no_legacy_filter_on_a_shared_stream() {
    let mut s = Scenario::new(vec![shared_policy("a", "/a/")], &["a", "a-b"]);
    std::sync::Arc::get_mut(&mut s.ctx)
        .expect("the context, not yet shared")
        .settings
        .selector = Some("logsub.io/instance=a".into());
    let shared = s.aws.stream("shared", 2);
    s.aws.group("/a/web", &[("logsub-a-b-c", shared.as_str())]);
    let paths = Paths::of("a", "b-c");
    let lsub = subscription_in("a", "b-c", spec());
    s.server.expect(first_sync(&paths, &lsub));
    s.reconcile(&lsub).await.expect("reconciled");
    s.server.verify();
    let filters = s.aws.filters("/a/web");
    assert!(
        filters.contains(&filter("logsub-a-b-c", &shared)),
        "a filter that may be another's was taken: {filters:?}"
    );
}

/// The same filter with no other LogSubscription of that earlier name in
/// the cluster: it is ours, renamed (new put first, then the old removed).
#[tokio::test]
async fn a_legacy_filter_no_other_shares_is_renamed() {
    let s = Scenario::new(vec![shared_policy("a", "/a/")], &["a"]);
    let shared = s.aws.stream("shared", 2);
    s.aws.group("/a/web", &[("logsub-a-b-c", shared.as_str())]);
    let paths = Paths::of("a", "b-c");
    let lsub = subscription_in("a", "b-c", spec());
    s.server.expect(first_sync(&paths, &lsub));
    s.reconcile(&lsub).await.expect("reconciled");
    s.server.verify();
    assert_eq!(
        s.aws.filters("/a/web"),
        vec![filter("logsub/a/b-c", &shared)]
    );
    let calls = s.aws.take_calls();
    let at = |call: &str| calls.iter().position(|c| c == call).expect(call);
    assert!(
        at("PutSubscriptionFilter") < at("DeleteSubscriptionFilter"),
        "{calls:?}"
    );
}

/// `a/b-c` is deleted while `a-b/c`, which shares its earlier filter name,
/// subscribed `/a/web` under that name into the stream both read: the
/// deletion takes off `a/b-c`'s own filter, not `a-b/c`'s.
#[tokio::test]
async fn a_deletion_leaves_a_shared_earlier_name_to_its_other_owner() {
    let mut s = Scenario::new(vec![shared_policy("a", "/a/")], &["a", "a-b"]);
    s.others.set(&[&subscription_in("a-b", "c", spec())]);
    let shared = s.aws.stream("shared", 2);
    s.aws.group(
        "/a/web",
        &[
            ("logsub-a-b-c", shared.as_str()),
            ("logsub/a/b-c", shared.as_str()),
        ],
    );
    let paths = Paths::of("a", "b-c");
    let mut lsub = subscription_in("a", "b-c", spec());
    lsub.status = Some(LogSubscriptionStatus {
        stream_arn: Some(shared.clone()),
        log_groups: vec![LogGroupStatus {
            name: "/a/web".into(),
            filter: FilterState::Active,
            message: None,
        }],
        ..LogSubscriptionStatus::default()
    });
    lsub.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    s.server.expect(fixtures::cleanup(&paths, &lsub, None));
    s.reconcile(&lsub).await.expect("cleaned up");
    s.server.verify();
    assert_eq!(
        s.aws.filters("/a/web"),
        vec![filter("logsub-a-b-c", &shared)],
        "a-b/c's filter went with a/b-c"
    );
}

/// A filter of our name sending elsewhere on a group our status lists: a
/// withdrawal leaves it alone (it is not ours).
#[tokio::test]
async fn a_withdrawal_leaves_a_filter_of_our_name_sending_elsewhere() {
    let (mut s, mut lsub, _, deployment) = synced_team_a().await;
    let paths = Paths::of("team-a", "app");
    // Someone points our filter's name elsewhere meanwhile.
    s.aws
        .group("/team-a/api", &[("logsub/team-a/app", "arn:elsewhere")]);
    lsub.status.as_mut().expect("status").log_groups = vec![LogGroupStatus {
        name: "/team-a/api".into(),
        filter: FilterState::Active,
        message: None,
    }];
    s.policies.set(Vec::new());
    s.server.expect(vec![
        Expect::get(paths.deployment.clone(), deployment),
        deleted(&paths.deployment),
        status_write(&paths, &lsub),
    ]);
    s.reconcile(&lsub).await.expect("reconciled");
    s.server.verify();
    assert_eq!(
        s.aws.filters("/team-a/api"),
        vec![filter("logsub/team-a/app", "arn:elsewhere")]
    );
    assert!(
        !s.aws
            .take_calls()
            .contains(&"DeleteSubscriptionFilter".to_owned())
    );
}

// ------------------------------------------------ regions

/// Moves synced `team-a/app` (`deployment`: its workers' Deployment) to
/// eu-west-1 while its us-east-1 filter cannot come off (throttled once);
/// `lsub` gets the status written. Returns the Deployment applied.
pub(super) async fn moved_with_the_old_filter_stuck(
    s: &Scenario,
    lsub: &mut LogSubscription,
    deployment: Value,
) -> Value {
    let paths = Paths::of("team-a", "app");
    lsub.spec.region = Some("eu-west-1".into());
    lsub.metadata.generation = Some(2);
    s.aws.fail(
        "DeleteSubscriptionFilter",
        Some("/team-a/api"),
        "ThrottlingException",
        1,
    );
    s.server.expect(resync_changed(&paths, lsub, deployment));
    s.reconcile(lsub).await.expect("reconciled");
    let seen = s.server.verify();
    lsub.status = Some(written(&seen, &paths));
    seen.bodies(&Method::PATCH, &paths.deployment)[0].clone()
}

/// The workers' objects and the status of a sync where the workers'
/// Deployment exists (`deployment`) but its configuration changed.
pub(super) fn resync_changed(
    paths: &Paths,
    lsub: &LogSubscription,
    deployment: Value,
) -> Vec<Expect> {
    let mut script = first_sync(paths, lsub);
    script[3] = Expect::get(paths.deployment.clone(), deployment);
    script
}

/// Moved to another region: the filters in the region it was in come off.
#[tokio::test]
async fn a_region_change_takes_the_filters_off_in_the_old_region() {
    let (s, mut lsub, _, deployment) = synced_team_a().await;
    let paths = Paths::of("team-a", "app");
    s.aws.0.lock().unwrap().regions.clear();
    lsub.spec.region = Some("eu-west-1".into());
    lsub.metadata.generation = Some(2);
    s.server
        .expect(resync_changed(&paths, &lsub, deployment.clone()));
    s.reconcile(&lsub).await.expect("reconciled");
    s.server.verify();
    let old = s.aws.calls_in(fixtures::REGION);
    assert!(
        old.contains(&"DeleteSubscriptionFilter".to_owned()),
        "{old:?}"
    );
    assert!(
        s.aws
            .calls_in("eu-west-1")
            .contains(&"PutSubscriptionFilter".to_owned())
    );
}

/// Moved to another region by a change the controller first sees after a
/// restart (its memory is empty): the status still names the old region's
/// stream; the filters there must still come off.
#[tokio::test]
async fn a_region_change_seen_after_a_restart_takes_the_old_filters_off() {
    let (s, mut lsub, _, deployment) = synced_team_a().await;
    let paths = Paths::of("team-a", "app");
    let restarted = Scenario::with_aws(
        s.aws.clone(),
        vec![shared_policy("team-a", "/team-a/")],
        &["team-a"],
    );
    restarted.aws.0.lock().unwrap().regions.clear();
    lsub.spec.region = Some("eu-west-1".into());
    lsub.metadata.generation = Some(2);
    restarted
        .server
        .expect(resync_changed(&paths, &lsub, deployment));
    restarted.reconcile(&lsub).await.expect("reconciled");
    restarted.server.verify();
    let old = restarted.aws.calls_in(fixtures::REGION);
    assert!(
        old.contains(&"DeleteSubscriptionFilter".to_owned()),
        "nothing done in the old region: {old:?}"
    );
}

/// Moved to another region while the old region's filter cannot come off
/// (throttled): it must be tried again later, not forgotten.
#[tokio::test]
async fn a_region_change_retries_the_old_filters_it_could_not_remove() {
    let (s, mut lsub, _, deployment) = synced_team_a().await;
    let paths = Paths::of("team-a", "app");
    let deployment = moved_with_the_old_filter_stuck(&s, &mut lsub, deployment).await;
    // The removal in the old region was tried, and failed.
    assert!(
        s.aws
            .calls_in(fixtures::REGION)
            .contains(&"DeleteSubscriptionFilter".to_owned())
    );
    s.aws.0.lock().unwrap().regions.clear();

    // The next sync (forced: a new generation) of the new region.
    lsub.metadata.generation = Some(3);
    s.server.expect(resync_changed(&paths, &lsub, deployment));
    s.reconcile(&lsub).await.expect("reconciled");
    s.server.verify();
    let old = s.aws.calls_in(fixtures::REGION);
    assert!(
        old.contains(&"DeleteSubscriptionFilter".to_owned()),
        "the old region's filter is never tried again: {old:?}"
    );
}

/// Deleted while a filter left in the old region still could not come off:
/// the deletion takes it off there before it lets the LogSubscription go.
#[tokio::test]
async fn a_deletion_takes_off_the_filters_left_in_the_old_region() {
    let (s, mut lsub, _, deployment) = synced_team_a().await;
    let paths = Paths::of("team-a", "app");
    let deployment = moved_with_the_old_filter_stuck(&s, &mut lsub, deployment).await;
    s.aws.0.lock().unwrap().regions.clear();

    lsub.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    s.server
        .expect(fixtures::cleanup(&paths, &lsub, Some(deployment)));
    s.reconcile(&lsub).await.expect("cleaned up");
    s.server.verify();
    let old = s.aws.calls_in(fixtures::REGION);
    assert!(
        old.contains(&"DeleteSubscriptionFilter".to_owned()),
        "the old region's filter outlives the LogSubscription: {old:?}"
    );
}
