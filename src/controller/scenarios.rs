//! The whole reconcile, against a mocked API server and a fake AWS account
//! (see `fixtures`): what it reads and writes, in order, for each situation.

use http::Method;
use serde_json::{Value, json};

use super::fixtures::{
    self, Expect, Paths, Scenario, condition, first_sync, policy, status_write, subscription_in,
    written,
};
use crate::api::LogSubscription;

/// A policy that lets `team-a` subscribe `/team-a/` groups into stream `shared`.
fn team_a_policy() -> crate::api::LogSubscriptionPolicy {
    policy(
        "team-a",
        json!({
            "namespaces": {"names": ["team-a"]},
            "logGroups": {"prefixes": ["/team-a/"]},
            "streams": {"existing": ["shared"]},
            "sinks": {"s3": [{"bucket": "team-a-logs"}]},
            "roles": {"delivery": ["*"]},
        }),
    )
}

/// `pattern "."` into the existing stream `shared`, to S3.
fn spec() -> Value {
    fixtures::into_shared("team-a-logs")
}

/// LogSubscription `team-a/app`'s objects.
fn app() -> Paths {
    Paths::of("team-a", "app")
}

/// LogSubscription `team-a/app` from `spec`.
fn subscription(spec: Value) -> LogSubscription {
    subscription_in("team-a", "app", spec)
}

/// `team-a/app` permitted and synced once, the workers' objects it applied
/// in the caches. Returns the scenario, the LogSubscription with the status
/// written, and what the first sync sent.
async fn synced_and_watched() -> (Scenario, LogSubscription, fixtures::Seen) {
    let mut s = Scenario::new(vec![team_a_policy()], &["team-a"]);
    s.aws.stream("shared", 2);
    s.aws.group("/team-a/api", &[]);
    let mut lsub = subscription(spec());
    s.server.expect(first_sync(&app(), &lsub));
    s.reconcile(&lsub).await.expect("reconciled");
    let seen = s.server.verify();
    s.cache_applied(&seen, &app());
    lsub.status = Some(written(&seen, &app()));
    (s, lsub, seen)
}

#[tokio::test]
async fn a_permitted_subscription_gets_filters_on_allowed_groups_only_and_its_workers() {
    let s = Scenario::new(vec![team_a_policy()], &["team-a"]);
    let stream = s.aws.stream("shared", 2);
    s.aws.group("/team-a/api", &[]);
    s.aws.group("/team-b/db", &[]);
    let lsub = subscription(spec());
    s.server.expect(first_sync(&app(), &lsub));

    s.reconcile(&lsub).await.expect("reconciled");

    let seen = s.server.verify();
    let ours = vec![fixtures::FakeFilter {
        name: "logsub/team-a/app".into(),
        destination: stream.clone(),
    }];
    assert_eq!(s.aws.filters("/team-a/api"), ours);
    assert!(
        s.aws.filters("/team-b/db").is_empty(),
        "a group the policy does not allow"
    );
    let status = written(&seen, &app());
    assert_eq!(status.stream_arn.as_deref(), Some(stream.as_str()));
    assert_eq!(status.log_group_count, Some(1));
    assert_eq!(condition(&status, "Permitted").0, "True");
    assert_eq!(condition(&status, "StreamReady"), ("True", "StreamActive"));
    assert_eq!(condition(&status, "SubscriptionFilterReady").0, "True");
    // No worker has taken a shard yet: not Ready.
    assert_eq!(condition(&status, "Ready").0, "False");
    assert!(
        seen.events.contains(&"SubscriptionFilterPut".to_owned()),
        "{:?}",
        seen.events
    );
    // The workers' Deployment is controlled by the LogSubscription.
    let deployment = seen.bodies(&Method::PATCH, &app().deployment)[0];
    assert_eq!(
        deployment["metadata"]["ownerReferences"][0]["uid"],
        "uid-team-a.app"
    );
    assert_eq!(
        deployment["metadata"]["ownerReferences"][0]["controller"],
        true
    );
}

#[tokio::test]
async fn a_second_reconcile_at_rest_makes_no_aws_call_and_no_write() {
    let (s, lsub, _) = synced_and_watched().await;
    assert!(!s.aws.take_calls().is_empty());

    // The workers' objects watched as applied; nothing changed: no write
    // anywhere, and only their leases read.
    s.server
        .expect(vec![Expect::empty_list(app().leases, "LeaseList")]);
    s.reconcile(&lsub).await.expect("reconciled");
    let seen = s.server.verify();
    assert_eq!(s.aws.take_calls(), Vec::<String>::new());
    assert!(seen.events.is_empty(), "{:?}", seen.events);
}

/// A resync of an unchanged LogSubscription checks AWS and reads how its
/// workers stand; their objects are applied again only every few resyncs.
#[tokio::test]
async fn a_resync_applies_the_workers_objects_again_only_now_and_then() {
    use std::time::{Duration, Instant};

    let (s, lsub, _) = synced_and_watched().await;
    s.aws.take_calls();
    let uid = "uid-team-a.app";
    let resync = s.ctx.settings.resync;
    let ago = |d: Duration| Instant::now().checked_sub(d).expect("uptime");
    let mut memo = s.ctx.memory.get(uid);
    memo.synced = Some(ago(resync + Duration::from_secs(1)));
    s.ctx.memory.put(uid, memo);

    // AWS is checked; the workers' objects, watched as applied, are not
    // written.
    s.server
        .expect(vec![Expect::empty_list(app().leases, "LeaseList")]);
    s.reconcile(&lsub).await.expect("resynced");
    s.server.verify();
    assert!(
        s.aws
            .take_calls()
            .contains(&"DescribeSubscriptionFilters".to_owned())
    );

    // Every few resyncs all of them are applied again, without reading
    // them first: the caches show them ours.
    let mut memo = s.ctx.memory.get(uid);
    memo.synced = Some(ago(resync + Duration::from_secs(1)));
    memo.workers_asserted = Some(ago(resync * 6 + Duration::from_secs(1)));
    s.ctx.memory.put(uid, memo);
    s.server.expect(vec![
        Expect::apply(app().binding),
        Expect::empty_list(app().leases, "LeaseList"),
        Expect::apply(app().account),
        Expect::apply(app().config),
        Expect::apply(app().deployment),
    ]);
    s.reconcile(&lsub).await.expect("resynced");
    s.server.verify();
}

/// Someone deletes the workers' RoleBinding, ServiceAccount and ConfigMap
/// (a GitOps prune, say): their watches see it, and the next status refresh,
/// long before a resync, applies each again after reading that it is free.
/// One edited is applied again without a read.
#[tokio::test]
async fn the_workers_objects_deleted_or_edited_are_applied_again_at_the_next_refresh() {
    use kube::runtime::reflector::ObjectRef;
    use kube::runtime::watcher::Event;

    let (mut s, lsub, _) = synced_and_watched().await;
    let owned = &s.ctx.owned;
    let leases = ObjectRef::new("app-worker-leases").within("team-a");
    let binding = (*owned.bindings.get(&leases).expect("cached")).clone();
    let account = ObjectRef::new("app-worker").within("team-a");
    let account = (*owned.accounts.get(&account).expect("cached")).clone();
    let config = ObjectRef::new("app-worker").within("team-a");
    let config = (*owned.configs.get(&config).expect("cached")).clone();

    s.owned
        .bindings
        .apply_watcher_event(&Event::Delete(binding.clone()));
    s.owned
        .accounts
        .apply_watcher_event(&Event::Delete(account));
    s.owned
        .configs
        .apply_watcher_event(&Event::Delete(config.clone()));
    s.server.expect(vec![
        Expect::missing(app().binding),
        Expect::apply(app().binding),
        Expect::empty_list(app().leases, "LeaseList"),
        Expect::missing(app().account),
        Expect::apply(app().account),
        Expect::missing(app().config),
        Expect::apply(app().config),
    ]);
    s.reconcile(&lsub).await.expect("refreshed");
    let seen = s.server.verify();
    s.cache_applied(&seen, &app());

    let mut edited = binding;
    edited.subjects = Some(Vec::new());
    s.owned.bindings.apply_watcher_event(&Event::Apply(edited));
    let mut edited = config;
    edited.data = Some(Default::default());
    s.owned.configs.apply_watcher_event(&Event::Apply(edited));
    s.server.expect(vec![
        Expect::apply(app().binding),
        Expect::empty_list(app().leases, "LeaseList"),
        Expect::apply(app().config),
    ]);
    s.reconcile(&lsub).await.expect("refreshed");
    s.server.verify();
}

/// A key someone else added to the workers' ConfigMap stays (an apply
/// cannot remove what it does not own): it is no difference, or every
/// refresh would write the ConfigMap again.
#[tokio::test]
async fn a_key_someone_added_to_the_workers_config_is_no_difference() {
    use kube::runtime::reflector::ObjectRef;
    use kube::runtime::watcher::Event;

    let (mut s, lsub, _) = synced_and_watched().await;
    let cached = s
        .ctx
        .owned
        .configs
        .get(&ObjectRef::new("app-worker").within("team-a"))
        .expect("cached");
    let mut added = (*cached).clone();
    added
        .data
        .get_or_insert_with(Default::default)
        .insert("extra.yaml".into(), "x: 1\n".into());
    s.owned.configs.apply_watcher_event(&Event::Apply(added));

    s.server
        .expect(vec![Expect::empty_list(app().leases, "LeaseList")]);
    s.reconcile(&lsub).await.expect("refreshed");
    s.server.verify();
}

/// The cache shows the workers' RoleBinding ours, but behind: someone
/// replaced it with one of their own. The apply names the uid the cache saw,
/// so the API server refuses it, and a read finds the name taken.
#[tokio::test]
async fn a_cached_object_replaced_by_someone_else_is_never_written() {
    use kube::runtime::reflector::ObjectRef;
    use kube::runtime::watcher::Event;

    let (mut s, lsub, _) = synced_and_watched().await;
    let key = ObjectRef::new("app-worker-leases").within("team-a");
    let cached = s.ctx.owned.bindings.get(&key).expect("cached");
    let mut edited = (*cached).clone();
    edited.subjects = Some(Vec::new());
    s.owned.bindings.apply_watcher_event(&Event::Apply(edited));
    let theirs = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "app-worker-leases", "namespace": "team-a", "uid": "theirs"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
    });
    s.server.expect(vec![
        fixtures::failing(Method::PATCH, &app().binding, 422),
        Expect::get(app().binding, theirs),
        status_write(&app(), &lsub),
    ]);

    let error = s.reconcile(&lsub).await.expect_err("a name taken");

    assert_eq!(error.category(), "name_conflict", "{error}");
    let seen = s.server.verify();
    let guarded = seen.bodies(&Method::PATCH, &app().binding)[0].clone();
    assert_eq!(guarded["metadata"]["uid"], json!(cached.metadata.uid));
    let status = written(&seen, &app());
    assert_eq!(
        condition(&status, "WorkersAvailable"),
        ("False", "NameConflict")
    );
}

/// Without the caches (their watch refused, or not listed yet) the workers'
/// objects are written as before there were caches: the RoleBinding at each
/// resync, the others only every few; never at every status refresh.
#[tokio::test]
async fn unwatched_objects_are_written_only_at_resyncs() {
    use std::time::{Duration, Instant};

    let s = Scenario::new(vec![team_a_policy()], &["team-a"]);
    s.aws.stream("shared", 2);
    s.aws.group("/team-a/api", &[]);
    let mut lsub = subscription(spec());
    s.server.expect(first_sync(&app(), &lsub));
    s.reconcile(&lsub).await.expect("reconciled");
    let seen = s.server.verify();
    let binding = seen.bodies(&Method::PATCH, &app().binding)[0].clone();
    let deployment = seen.bodies(&Method::PATCH, &app().deployment)[0].clone();
    lsub.status = Some(written(&seen, &app()));

    s.server.expect(vec![
        Expect::empty_list(app().leases, "LeaseList"),
        Expect::get(app().deployment, deployment.clone()),
    ]);
    s.reconcile(&lsub).await.expect("refreshed");
    s.server.verify();

    let uid = "uid-team-a.app";
    let mut memo = s.ctx.memory.get(uid);
    memo.synced = Instant::now().checked_sub(s.ctx.settings.resync + Duration::from_secs(1));
    s.ctx.memory.put(uid, memo);
    s.server.expect(vec![
        Expect::get(app().binding, binding),
        Expect::apply(app().binding),
        Expect::empty_list(app().leases, "LeaseList"),
        Expect::get(app().deployment, deployment),
    ]);
    s.reconcile(&lsub).await.expect("resynced");
    s.server.verify();
}

/// The workers' RoleBinding removed by someone: reading their leases is
/// refused, and the next reconcile applies the workers' objects again.
#[tokio::test]
async fn a_refused_lease_read_applies_the_workers_objects_again() {
    let (s, mut lsub, _) = synced_and_watched().await;

    s.server.expect(vec![
        fixtures::failing(Method::GET, &app().leases, 403),
        status_write(&app(), &lsub),
    ]);
    s.reconcile(&lsub).await.expect_err("refused");
    let seen = s.server.verify();
    lsub.status = Some(written(&seen, &app()));

    // However the caches show them: the refusal says something changed.
    s.server.expect(vec![
        Expect::apply(app().binding),
        Expect::empty_list(app().leases, "LeaseList"),
        Expect::apply(app().account),
        Expect::apply(app().config),
        Expect::apply(app().deployment),
        status_write(&app(), &lsub),
    ]);
    s.reconcile(&lsub).await.expect("reconciled");
    s.server.verify();
}

/// The workers' Deployment in the watch cache: a status refresh reads only
/// their leases.
#[tokio::test]
async fn a_status_refresh_reads_the_workers_deployment_from_the_cache() {
    let (s, lsub, _) = synced_and_watched().await;

    s.server
        .expect(vec![Expect::empty_list(app().leases, "LeaseList")]);
    s.reconcile(&lsub).await.expect("reconciled");
    s.server.verify();
}

#[tokio::test]
async fn without_a_policy_nothing_is_created_and_the_status_says_why() {
    let s = Scenario::new(Vec::new(), &["team-a"]);
    s.aws.stream("shared", 2);
    s.aws.group("/team-a/api", &[]);
    let lsub = subscription(spec());
    s.server.expect(vec![
        Expect::missing(app().deployment),
        status_write(&app(), &lsub),
    ]);

    s.reconcile(&lsub).await.expect("reconciled");

    let seen = s.server.verify();
    assert_eq!(s.aws.take_calls(), Vec::<String>::new());
    let status = written(&seen, &app());
    assert_eq!(condition(&status, "Permitted"), ("False", "NotPermitted"));
    assert_eq!(condition(&status, "Ready"), ("False", "NotPermitted"));
    assert_eq!(seen.events, ["NotPermitted"]);
}

#[tokio::test]
async fn an_invalid_spec_is_refused_before_any_aws_call() {
    let s = Scenario::new(vec![team_a_policy()], &["team-a"]);
    let mut spec = spec();
    spec["stream"] = json!({"existing": {"name": "shared"}, "managed": {"shardCount": 1}});
    let lsub = subscription(spec);
    s.server.expect(vec![
        Expect::missing(app().deployment),
        status_write(&app(), &lsub),
    ]);

    s.reconcile(&lsub).await.expect("reconciled");

    let seen = s.server.verify();
    assert_eq!(s.aws.take_calls(), Vec::<String>::new());
    let status = written(&seen, &app());
    assert_eq!(condition(&status, "StreamReady"), ("False", "InvalidSpec"));
    assert_eq!(condition(&status, "Ready"), ("False", "InvalidSpec"));
    assert_eq!(seen.events, ["InvalidSpec"]);
}

#[tokio::test]
async fn a_deployment_of_the_workers_name_that_is_not_ours_is_never_written() {
    let s = Scenario::new(vec![team_a_policy()], &["team-a"]);
    s.aws.stream("shared", 2);
    s.aws.group("/team-a/api", &[]);
    let lsub = subscription(spec());
    let theirs = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "app-worker", "namespace": "team-a", "uid": "someone-else"},
        "spec": {"selector": {}, "template": {}},
    });
    s.server.expect(vec![
        Expect::missing(app().binding),
        Expect::apply(app().binding),
        Expect::empty_list(app().leases, "LeaseList"),
        Expect::get(app().deployment, theirs),
        status_write(&app(), &lsub),
    ]);

    let result = s.reconcile(&lsub).await;

    let error = result.expect_err("a name taken fails the reconcile");
    assert_eq!(error.category(), "name_conflict", "{error}");
    let seen = s.server.verify();
    assert!(seen.bodies(&Method::PATCH, &app().deployment).is_empty());
    let status = written(&seen, &app());
    assert_eq!(
        condition(&status, "WorkersAvailable"),
        ("False", "NameConflict")
    );
}

#[tokio::test]
async fn a_group_full_of_other_filters_is_shown_and_left_alone() {
    let s = Scenario::new(vec![team_a_policy()], &["team-a"]);
    s.aws.stream("shared", 2);
    let others = [("ops-1", "arn:x"), ("ops-2", "arn:y")];
    s.aws.group("/team-a/full", &others);
    let lsub = subscription(spec());
    s.server.expect(first_sync(&app(), &lsub));

    s.reconcile(&lsub).await.expect("reconciled");

    let seen = s.server.verify();
    assert_eq!(s.aws.filters("/team-a/full").len(), 2);
    assert!(
        !s.aws
            .take_calls()
            .contains(&"PutSubscriptionFilter".to_owned())
    );
    let status = written(&seen, &app());
    assert_eq!(
        status.log_groups[0].filter,
        crate::api::FilterState::LimitExceeded
    );
    assert_eq!(
        condition(&status, "SubscriptionFilterReady").0,
        "False",
        "{:?}",
        status.conditions
    );
}

#[tokio::test]
async fn a_policy_withdrawn_takes_the_filters_off_and_stops_the_workers() {
    let mut s = Scenario::new(vec![team_a_policy()], &["team-a"]);
    let stream = s.aws.stream("shared", 2);
    s.aws.group("/team-a/api", &[]);
    // Another LogSubscription's filter on the group is not ours to remove.
    s.aws
        .group("/team-a/web", &[("logsub/team-b/app", "arn:other")]);
    let mut lsub = subscription(spec());
    s.server.expect(first_sync(&app(), &lsub));
    s.reconcile(&lsub).await.expect("reconciled");
    let seen = s.server.verify();
    let deployment = seen.bodies(&Method::PATCH, &app().deployment)[0].clone();
    lsub.status = Some(written(&seen, &app()));
    assert_eq!(s.aws.filters("/team-a/web").len(), 2);

    s.policies.set(Vec::new());
    s.server.expect(vec![
        Expect::get(app().deployment, deployment),
        Expect::new(Method::DELETE, app().deployment, |_| {
            (200, json!({"kind": "Status", "status": "Success"}))
        }),
        status_write(&app(), &lsub),
    ]);
    s.reconcile(&lsub).await.expect("reconciled");

    let seen = s.server.verify();
    assert!(s.aws.filters("/team-a/api").is_empty());
    assert_eq!(
        s.aws.filters("/team-a/web"),
        vec![fixtures::FakeFilter {
            name: "logsub/team-b/app".into(),
            destination: "arn:other".into()
        }]
    );
    let status = written(&seen, &app());
    assert_eq!(condition(&status, "Ready"), ("False", "NotPermitted"));
    assert_eq!(status.log_group_count, Some(0));
    // The stream is kept: permitted again, the workers resume from their checkpoints.
    assert_eq!(status.stream_arn.as_deref(), Some(stream.as_str()));
}

fn managed_policy() -> crate::api::LogSubscriptionPolicy {
    policy(
        "team-a",
        json!({
            "namespaces": {"names": ["team-a"]},
            "logGroups": {"prefixes": ["/team-a/"]},
            "streams": {"managed": {"maxShardCount": 4}},
            "sinks": {"s3": [{"bucket": "team-a-logs"}]},
            "roles": {"delivery": ["*"]},
        }),
    )
}

#[tokio::test]
async fn a_managed_stream_is_created_tagged_as_ours_and_one_of_its_name_not_ours_is_refused() {
    let s = Scenario::new(vec![managed_policy()], &["team-a"]);
    s.aws.group("/team-a/api", &[]);
    let mut managed = spec();
    managed["stream"] = json!({"managed": {"shardCount": 2}});
    let lsub = subscription(managed.clone());
    s.server.expect(vec![status_write(&app(), &lsub)]);

    s.reconcile(&lsub).await.expect("reconciled");

    let seen = s.server.verify();
    let status = written(&seen, &app());
    assert_eq!(condition(&status, "StreamReady").1, "StreamCreating");
    {
        let account = s.aws.0.lock().unwrap();
        let stream = &account.streams["logsub_team-a_app"];
        assert_eq!(
            stream.tags.get(super::sync::UID_TAG).map(String::as_str),
            Some("uid-team-a.app")
        );
        assert_eq!(stream.shards, 2);
    }
    assert!(
        s.aws.filters("/team-a/api").is_empty(),
        "no filter before the stream is usable"
    );

    // The same name in another LogSubscription (another UID): not its stream.
    let s = Scenario::new(vec![managed_policy()], &["team-a"]);
    s.aws.stream("logsub_team-a_app", 2);
    let lsub = subscription(managed);
    s.server.expect(vec![status_write(&app(), &lsub)]);
    s.reconcile(&lsub).await.expect("reconciled");
    let seen = s.server.verify();
    let status = written(&seen, &app());
    assert_eq!(
        condition(&status, "StreamReady"),
        ("False", "StreamNameTaken")
    );
    let calls = s.aws.take_calls();
    assert!(
        !calls
            .iter()
            .any(|c| c == "CreateStream" || c.contains("Subscription")),
        "{calls:?}"
    );
}

#[tokio::test]
async fn an_api_server_failing_the_workers_apply_is_shown_and_retried() {
    let s = Scenario::new(vec![team_a_policy()], &["team-a"]);
    s.aws.stream("shared", 2);
    s.aws.group("/team-a/api", &[]);
    let lsub = subscription(spec());
    let mut script = first_sync(&app(), &lsub);
    // The Deployment's apply answers 500; nothing after it is tried.
    script.truncate(8);
    script.push(Expect::new(Method::PATCH, app().deployment, |_| {
        (
            500,
            json!({"kind": "Status", "code": 500, "message": "etcd timeout"}),
        )
    }));
    script.push(status_write(&app(), &lsub));
    s.server.expect(script);

    let error = s.reconcile(&lsub).await.expect_err("retried with backoff");

    assert_eq!(error.category(), "kubernetes", "{error}");
    let seen = s.server.verify();
    let status = written(&seen, &app());
    assert_eq!(
        condition(&status, "WorkersAvailable"),
        ("Unknown", "WorkersUnavailable")
    );
    // The filters stay: they were put before the workers' objects.
    assert_eq!(s.aws.filters("/team-a/api").len(), 1);
    assert_eq!(condition(&status, "SubscriptionFilterReady").0, "True");
}
