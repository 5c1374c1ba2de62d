//! Region and role moves against deletions, withdrawals and restarts, a
//! namespaced controller's view of shared earlier names, AWS error classes
//! and an edited workers' Deployment. Tests marked `#[ignore = "known gap:
//! …"]` show a fault not handled yet.

use http::Method;
use serde_json::json;

use super::attack_scenarios::{
    filter, moved_with_the_old_filter_stuck, resync_changed, shared_policy, spec, synced_team_a,
};
use super::fixtures::{
    self, Expect, Paths, Scenario, deleted, failing, first_sync, status_write, subscription_in,
};

fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
}

fn deletes_in(s: &Scenario, region: &str) -> usize {
    s.aws
        .calls_in(region)
        .iter()
        .filter(|c| *c == "DeleteSubscriptionFilter")
        .count()
}

// ------------------------------------------------ region moves

/// The user moves the LogSubscription to another region and deletes it
/// before the controller reconciled the move (one reconcile sees both).
/// The controller remembers where the filters are (us-east-1, memo.scope)
/// and the status names the us-east-1 stream, yet the cleanup looks only in
/// eu-west-1: the us-east-1 filters outlive the LogSubscription.
#[tokio::test]
async fn a_region_change_seen_with_the_deletion_takes_the_old_filters_off() {
    let (s, mut lsub, _, deployment) = synced_team_a().await;
    s.aws.0.lock().unwrap().regions.clear();
    let paths = Paths::of("team-a", "app");
    lsub.spec.region = Some("eu-west-1".into());
    lsub.metadata.generation = Some(2);
    lsub.metadata.deletion_timestamp = Some(now());
    s.server
        .expect(fixtures::cleanup(&paths, &lsub, Some(deployment)));
    s.reconcile(&lsub).await.expect("cleaned up");
    s.server.verify();
    assert!(
        deletes_in(&s, fixtures::REGION) > 0,
        "no DeleteSubscriptionFilter in {} where the filter is: {:?} / eu-west-1: {:?}",
        fixtures::REGION,
        s.aws.calls_in(fixtures::REGION),
        s.aws.calls_in("eu-west-1")
    );
}

/// Moved to eu-west-1 while the us-east-1 filter could not come off
/// (throttled, kept in memo.left_behind). The controller restarts (memory
/// lost), then the LogSubscription is deleted: the us-east-1 filter is never
/// tried again and outlives the LogSubscription.
#[tokio::test]
#[ignore = "known gap: filters left behind are remembered in memory only; a restart after the status names the new stream forgets them"]
async fn filters_left_behind_survive_a_restart_and_come_off_at_deletion() {
    let (s, mut lsub, _, deployment) = synced_team_a().await;
    s.aws.0.lock().unwrap().regions.clear();
    let paths = Paths::of("team-a", "app");
    let deployment = moved_with_the_old_filter_stuck(&s, &mut lsub, deployment).await;
    assert!(!s.ctx.memory.get("uid-team-a.app").left_behind.is_empty());
    // Realistically the status now names the eu-west-1 stream.
    lsub.status.as_mut().expect("status").stream_arn = Some(format!(
        "arn:aws:kinesis:eu-west-1:{}:stream/shared",
        fixtures::ACCOUNT
    ));

    let restarted = Scenario::with_aws(
        s.aws.clone(),
        vec![shared_policy("team-a", "/team-a/")],
        &["team-a"],
    );
    restarted.aws.0.lock().unwrap().regions.clear();
    lsub.metadata.deletion_timestamp = Some(now());
    restarted
        .server
        .expect(fixtures::cleanup(&paths, &lsub, Some(deployment)));
    restarted.reconcile(&lsub).await.expect("cleaned up");
    restarted.server.verify();
    assert!(
        deletes_in(&restarted, fixtures::REGION) > 0,
        "the filter left in {} is never removed: {:?}",
        fixtures::REGION,
        restarted.aws.calls_in(fixtures::REGION)
    );
}

/// Two moves: us-east-1 → eu-west-1 (the us-east-1 filter could not come
/// off, kept in left_behind), then eu-west-1 → ap-south-1. The second move
/// overwrites left_behind with eu-west-1: us-east-1's filter is forgotten.
#[tokio::test]
async fn a_second_move_keeps_the_filters_left_by_the_first() {
    let (s, mut lsub, _, deployment) = synced_team_a().await;
    s.aws.0.lock().unwrap().regions.clear();
    let paths = Paths::of("team-a", "app");
    let deployment = moved_with_the_old_filter_stuck(&s, &mut lsub, deployment).await;
    let behind = s.ctx.memory.get("uid-team-a.app").left_behind;
    assert_eq!(
        behind.first().map(|b| b.scope.region.as_str()),
        Some(fixtures::REGION)
    );
    s.aws.0.lock().unwrap().regions.clear();

    lsub.spec.region = Some("ap-south-1".into());
    lsub.metadata.generation = Some(3);
    s.server.expect(resync_changed(&paths, &lsub, deployment));
    s.reconcile(&lsub).await.expect("reconciled");
    s.server.verify();
    let behind = s.ctx.memory.get("uid-team-a.app").left_behind;
    assert!(
        deletes_in(&s, fixtures::REGION) > 0
            || behind.iter().any(|b| b.scope.region == fixtures::REGION),
        "the filter left in {} is neither retried nor remembered (left_behind now {:?})",
        fixtures::REGION,
        behind.iter().map(|b| &b.scope.region).collect::<Vec<_>>()
    );
}

/// The first sync's status write fails (the status names no stream); the
/// LogSubscription then moves to eu-west-1. The controller knows the stream
/// its us-east-1 filters send to (memo.aws) but the move is only noticed
/// when the status names a stream: the us-east-1 filter is never removed.
#[tokio::test]
async fn a_move_after_a_failed_status_write_takes_the_old_filters_off() {
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
    let seen = s.server.verify();
    let deployment = seen.bodies(&Method::PATCH, &paths.deployment)[0].clone();
    assert_eq!(s.aws.filters("/team-a/api").len(), 1);
    s.aws.0.lock().unwrap().regions.clear();

    lsub.spec.region = Some("eu-west-1".into());
    lsub.metadata.generation = Some(2);
    s.server.expect(resync_changed(&paths, &lsub, deployment));
    s.reconcile(&lsub).await.expect("reconciled");
    s.server.verify();
    let behind = s.ctx.memory.get("uid-team-a.app").left_behind;
    assert!(
        deletes_in(&s, fixtures::REGION) > 0 || !behind.is_empty(),
        "the us-east-1 filter is neither removed nor remembered: {:?}",
        s.aws.calls_in(fixtures::REGION)
    );
}

// ------------------------------------------------ shared earlier names

/// A controller of one namespace (`--namespace a`) watches only that
/// namespace's LogSubscriptions, and `a/b-c`'s earlier name is always shared
/// with one in another namespace (`a-b/c`): its cache can never show the
/// other. `a-b/c` (run by the controller of namespace a-b) subscribed `/a/web`
/// under that earlier name into the stream both read; the controller of `a`
/// takes that filter (renames it to its own), which the change was meant to
/// prevent.
#[tokio::test]
async fn a_namespaced_controller_leaves_a_shared_earlier_name() {
    let mut s = Scenario::new(vec![shared_policy("a", "/a/")], &["a"]);
    std::sync::Arc::get_mut(&mut s.ctx)
        .expect("no other reference yet")
        .settings
        .namespace = Some("a".into());
    // What a controller of namespace `a` has in its cache: only namespace a.
    s.others.set(&[]);
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
        "a namespaced controller took a filter another namespace may own: {filters:?}"
    );
}

// ------------------------------------------------ AWS error classes

/// Codes the AWS SDK's own retry classifier treats as throttling or
/// transient are classified Permanent: shown as a failure that waits for a
/// change instead of being retried soon.
#[test]
fn codes_the_sdk_retries_are_not_permanent() {
    use crate::aws::{ErrorClass, class_of_code};
    let retryable = [
        "ThrottledException",
        "RequestThrottledException",
        "TransactionInProgressException",
        "BandwidthLimitExceeded",
        "RequestThrottled",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
        "RequestTimeout",
        "RequestTimeoutException",
    ];
    let permanent: Vec<&str> = retryable
        .into_iter()
        .filter(|c| class_of_code(c) == ErrorClass::Permanent)
        .collect();
    assert!(permanent.is_empty(), "classified Permanent: {permanent:?}");
}

/// A 5xx answer without an error code (a proxy, a load balancer, the
/// `--aws-endpoint-url` gateway answering 502/503 with an empty or HTML
/// body) is classified Permanent, though classify's contract says 5xx are
/// transient.
#[test]
fn a_5xx_without_a_code_is_transient() {
    use aws_sdk_kinesis::error::ErrorMetadata;
    use aws_sdk_kinesis::operation::describe_stream_summary::DescribeStreamSummaryError;
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_runtime_api::client::result::SdkError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    for status in [500u16, 502, 503, 504] {
        let err: SdkError<DescribeStreamSummaryError, HttpResponse> = SdkError::service_error(
            DescribeStreamSummaryError::generic(ErrorMetadata::builder().build()),
            HttpResponse::new(
                StatusCode::try_from(status).expect("status"),
                SdkBody::from("<html>Bad Gateway</html>"),
            ),
        );
        let classified = crate::aws::classify(err);
        assert_eq!(
            classified.class,
            crate::aws::ErrorClass::Transient,
            "HTTP {status}: {classified}"
        );
    }
}

// ------------------------------------------------ the workers' Deployment

/// Someone edits the workers' Deployment: the pods now run as another
/// ServiceAccount and send Kinesis calls elsewhere; its config hash, image
/// and replicas are untouched. The reconcile the Deployment's change
/// triggers reads it from the cache, finds it "as wanted" (plan::workload
/// compares only those three) and does not apply it again, though the code
/// says the watched Deployment is applied again whenever it differs. The
/// edit lasts until the sixth resync (30 minutes by default).
#[tokio::test]
#[ignore = "known gap: plan::workload compares the config hash, image and replicas only; another edit of the pod template lasts until the next reassert (6 resyncs)"]
async fn a_tampered_workers_pod_spec_is_applied_again() {
    let (mut s, lsub, _, deployment) = synced_team_a().await;
    s.aws.0.lock().unwrap().regions.clear();
    let paths = Paths::of("team-a", "app");
    let mut tampered = deployment.clone();
    let pod = &mut tampered["spec"]["template"]["spec"];
    pod["serviceAccountName"] = json!("default");
    let env = pod["containers"][0]["env"]
        .as_array_mut()
        .expect("the worker's env");
    env.push(json!({"name": "AWS_ENDPOINT_URL_KINESIS", "value": "https://attacker.example"}));
    let cached: k8s_openapi::api::apps::v1::Deployment =
        serde_json::from_value(tampered).expect("a Deployment");
    s.owned
        .deployments
        .apply_watcher_event(&kube::runtime::watcher::Event::Apply(cached));

    s.server.expect(vec![
        Expect::empty_list(paths.leases.clone(), "LeaseList"),
        Expect::apply(paths.deployment.clone()),
    ]);
    s.reconcile(&lsub).await.expect("reconciled");
    s.server.verify();
}

/// Synced in us-east-1; the controller restarts; meanwhile the spec moved to
/// eu-west-1 and the policy was withdrawn. The status still names the
/// us-east-1 stream (which tells where the filters are, as `aws()` itself
/// uses after a restart), but the withdrawal looks only in eu-west-1: the
/// us-east-1 filter keeps delivering for a LogSubscription that may not run.
#[tokio::test]
async fn a_withdrawal_after_a_restart_and_a_move_takes_the_old_filters_off() {
    let (s, mut lsub, stream, deployment) = synced_team_a().await;
    s.aws.0.lock().unwrap().regions.clear();
    let paths = Paths::of("team-a", "app");
    let restarted = Scenario::with_aws(s.aws.clone(), Vec::new(), &["team-a"]);
    restarted.aws.0.lock().unwrap().regions.clear();
    lsub.spec.region = Some("eu-west-1".into());
    lsub.metadata.generation = Some(2);
    assert_eq!(
        lsub.status.as_ref().and_then(|st| st.stream_arn.as_deref()),
        Some(stream.as_str())
    );
    restarted.server.expect(vec![
        Expect::get(paths.deployment.clone(), deployment),
        deleted(&paths.deployment),
        status_write(&paths, &lsub),
    ]);
    restarted.reconcile(&lsub).await.expect("reconciled");
    restarted.server.verify();
    assert!(
        deletes_in(&restarted, fixtures::REGION) > 0,
        "nothing removed in {} where the status says the filters send: {:?} / eu-west-1: {:?}",
        fixtures::REGION,
        restarted.aws.calls_in(fixtures::REGION),
        restarted.aws.calls_in("eu-west-1"),
    );
}
