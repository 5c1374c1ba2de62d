//! The controller at scale, on the stack: N LogSubscriptions (one log group
//! each, one shared existing stream, workers scaled to zero so that the local
//! node is not asked to run N pods), authorized by a LogSubscriptionPolicy
//! among `--policies` others that select other namespaces. Reports the time until every one is
//! reconciled, the AWS calls per LogSubscription per resync period at rest,
//! and the controller's CPU time and memory. Needs the stack
//! (`hack/stack.sh up`, then `eval "$(hack/stack.sh env)"`).
//!
//!     cargo bench --bench controller_scale [-- --subscriptions 1000 --resync 60 --policies 20]
//!
//! `--plot <file.svg>` also draws the ramp and the deletion (docs/bench/).

#[path = "../tests/common/mod.rs"]
mod common;
mod plot;

use std::time::{Duration, Instant};

use common::controller::{create, identity, start_with};
use common::{OWN_POLICIES, TestNamespace, active_stream, stack};
use futures::StreamExt;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use logsub::api::{LogSubscription, LogSubscriptionPolicy};
use serde_json::json;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == name)
        .map_or(default, |w| w[1].parse().expect("a number"))
}

/// Reconciled: every check but delivery (no workers run) is true.
fn reconciled(l: &LogSubscription) -> bool {
    let Some(status) = &l.status else {
        return false;
    };
    ["StreamReady", "SubscriptionFilterReady", "WorkersAvailable"]
        .iter()
        .all(|t| {
            status
                .conditions
                .iter()
                .any(|c| c.type_ == *t && c.status == "True")
        })
}

/// CPU seconds (user + system) and peak resident memory of a process.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the state.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    (cpu, hwm)
}

#[tokio::main]
async fn main() {
    let n = arg("--subscriptions", 1000);
    let resync = arg("--resync", 60);
    let policies = arg("--policies", 20);
    let client = stack().kube().await;
    common::install_crd(&client).await;
    let ns = TestNamespace::labelled(&client, "scale", &[(OWN_POLICIES, "true")]).await;
    let aws = stack().aws().await;
    let logs = aws_sdk_cloudwatchlogs::Client::new(&aws);
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    let (stream, _) = active_stream(&kinesis, "scale", 1).await;
    let prefix = format!("/{}", common::unique("scale"));
    futures::stream::iter(0..n)
        .for_each_concurrent(16, |i| {
            let logs = &logs;
            let prefix = &prefix;
            async move {
                logs.create_log_group()
                    .log_group_name(format!("{prefix}/{i}"))
                    .send()
                    .await
                    .expect("create log group");
            }
        })
        .await;
    // The one policy that selects the namespace, among others that do not.
    let policy_api = kube::Api::<LogSubscriptionPolicy>::all(client.clone());
    let policy_names: Vec<String> = (0..=policies).map(|i| format!("{}-{i}", ns.name)).collect();
    for (i, name) in policy_names.iter().enumerate() {
        let selected = if i == 0 {
            ns.name.clone()
        } else {
            format!("{}-other-{i}", ns.name)
        };
        let policy: LogSubscriptionPolicy = serde_json::from_value(json!({
            "apiVersion": "logsub.io/v1alpha1",
            "kind": "LogSubscriptionPolicy",
            "metadata": {"name": name},
            "spec": {
                "namespaces": {"selector": {"matchLabels": {"kubernetes.io/metadata.name": selected}}},
                "logGroups": {"prefixes": [format!("{prefix}/")]},
                "streams": {"existing": [stream]},
                "sinks": {"s3": [{"bucket": "unused"}]},
                "roles": {"delivery": ["arn:aws:iam::123456789012:role/CWLtoKinesis"]},
            },
        }))
        .expect("a policy");
        policy_api
            .patch(
                name,
                &PatchParams::apply("logsub-bench").force(),
                &Patch::Apply(&policy),
            )
            .await
            .expect("apply a policy");
    }
    let floor = write_floor(&client, n, &stream, &prefix).await;
    let kubeconfig = identity(&ns).await;
    let controller = start_with(
        &ns,
        &kubeconfig,
        &format!("{resync}s"),
        // The chart's lease duration: the tests' short one is lost when
        // the API server answers slowly under thousands of writes.
        &[
            "--status-interval",
            "30s",
            "--log",
            "warn",
            "--lease-duration",
            "15s",
        ],
    );
    let pid = controller.child.id().expect("controller pid");

    let started = Instant::now();
    let (cpu_before, _) = usage(pid);
    futures::stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let ns = &ns;
            let stream = &stream;
            let prefix = &prefix;
            async move {
                create(
                    ns,
                    subscription(&format!("s{i}"), &format!("{prefix}/{i}"), stream),
                )
                .await;
            }
        })
        .await;
    let created = started.elapsed();
    let api = ns.api::<LogSubscription>();
    let mut reconciling = plot::Series {
        name: "reconciled".into(),
        points: vec![(0.0, 0.0)],
    };
    // Watched, not listed again and again: listing thousands of statuses
    // twice a second would cost the API server more than the controller does.
    let (store, writer) = kube::runtime::reflector::store::<LogSubscription>();
    let watch = kube::runtime::watcher(api.clone(), Default::default())
        .default_backoff()
        .reflect(writer)
        .for_each(|_| futures::future::ready(()));
    let watching = tokio::spawn(watch);
    let all_ready = loop {
        let ready = store.state().iter().filter(|l| reconciled(l)).count();
        reconciling
            .points
            .push((started.elapsed().as_secs_f64(), ready as f64));
        if ready as u64 == n {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "only {ready} of {n} reconciled after 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    watching.abort();
    let (cpu_ramp, rss_ramp) = usage(pid);

    // At rest: AWS calls over two resync periods.
    let calls = "logsub_controller_aws_calls_total";
    let before = controller.metric(calls, &[]).await;
    let (cpu_rest_start, _) = usage(pid);
    tokio::time::sleep(Duration::from_secs(2 * resync)).await;
    let after = controller.metric(calls, &[]).await;
    let (cpu_rest_end, rss) = usage(pid);
    let per = (after - before) / n as f64 / 2.0;

    println!(
        "controller_scale: {n} LogSubscriptions, resync {resync} s, {} policies (one selects them)",
        policies + 1
    );
    println!("  created in            {:>8.1} s", created.as_secs_f64());
    println!(
        "  all reconciled after  {:>8.1} s   (target ≤ 60 s)",
        all_ready.as_secs_f64()
    );
    println!(
        "  write floor           {:>8.1} s   ({:.2}× of it: logsub's time over the floor's)",
        floor.elapsed.as_secs_f64(),
        all_ready.as_secs_f64() / floor.elapsed.as_secs_f64()
    );
    println!("  AWS calls at rest     {per:>8.2} per LogSubscription per resync   (target ≤ 1)");
    println!(
        "  controller CPU        {:>8.1} s to reconcile all, {:.1} s over {} s at rest",
        cpu_ramp - cpu_before,
        cpu_rest_end - cpu_rest_start,
        2 * resync
    );
    println!(
        "  controller peak RSS   {:>8.1} MiB (after the ramp {:.1} MiB)",
        rss as f64 / 1024.0,
        rss_ramp as f64 / 1024.0
    );

    // Deleting them all: each removes its filter (deletionPolicy Delete).
    // One by one, 32 at once, as a GitOps tool would: a single collection
    // delete of thousands outlasts the API server's request timeout.
    let deleting = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let api = &api;
            async move {
                match api.delete(&format!("s{i}"), &Default::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => panic!("delete s{i}: {e}"),
                }
            }
        })
        .await;
    let mut remaining = plot::Series {
        name: "left while deleting".into(),
        points: Vec::new(),
    };
    loop {
        let left = api
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len();
        remaining
            .points
            .push((deleting.elapsed().as_secs_f64(), left as f64));
        if left == 0 {
            break;
        }
        assert!(
            deleting.elapsed() < Duration::from_secs(1800),
            "{left} left"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "  all deleted after     {:>8.1} s",
        deleting.elapsed().as_secs_f64()
    );
    plot::write_if_asked(&plot::Chart {
        title: &format!("Controller: {n} LogSubscriptions created at once, then deleted"),
        x_label: "seconds since the first create (or the delete)",
        y_label: "LogSubscriptions",
        categories: Vec::new(),
        series: vec![reconciling, remaining],
    });
    drop(controller);
    for name in &policy_names {
        let _ = policy_api.delete(name, &Default::default()).await;
    }
    ns.delete().await;
    floor.ns.delete().await;
}

/// The write floor of this cluster, measured before logsub in the same run:
/// what any controller must write for N LogSubscriptions, and nothing else.
struct Floor {
    elapsed: Duration,
    ns: TestNamespace,
}

/// Creates N LogSubscriptions in a namespace of their own (which logsub,
/// watching only its own, never sees) and, as the controller's identity there and at the
/// controller's concurrency, server-side applies each one's workers'
/// objects (logsub's own builder makes them) and a status of the same shape
/// as logsub's: no read, no finalizer, no Event, no AWS call. The controller
/// manager makes these Deployments' ReplicaSets at its own request rate (20
/// per second by default) and is still at it while logsub is measured: the
/// ratio errs against logsub.
async fn write_floor(admin: &kube::Client, n: u64, stream: &str, prefix: &str) -> Floor {
    use logsub::controller::resources::{config, workload};

    let ns = TestNamespace::labelled(admin, "floor", &[(OWN_POLICIES, "true")]).await;
    let kubeconfig = identity(&ns).await;
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig"),
        &Default::default(),
    )
    .await
    .expect("the controller's identity");
    let controller = kube::Client::try_from(config).expect("a client");
    let runtime = workload::Runtime {
        image: "logsub:bench".into(),
        env: Vec::new(),
        admin_addr: "0.0.0.0:8080".parse().expect("an address"),
        worker_role: logsub::controller::resources::rbac::WORKER_ROLE.into(),
        controller: Some(logsub::controller::resources::rbac::subject(&format!(
            "system:serviceaccount:{}:logsub-controller",
            ns.name
        ))),
    };
    let started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(16, |i| {
            let (ns, controller, runtime) = (&ns, &controller, &runtime);
            let apply = PatchParams::apply(FLOOR_MANAGER).force();
            async move {
                let mut lsub = subscription(&format!("f{i}"), &format!("{prefix}/{i}"), stream);
                lsub["metadata"]["namespace"] = json!(ns.name);
                let lsub: LogSubscription =
                    serde_json::from_value(lsub).expect("a LogSubscription");
                let lsub = ns
                    .api::<LogSubscription>()
                    .create(&Default::default(), &lsub)
                    .await
                    .expect("create");
                let arn = format!("arn:aws:kinesis:us-east-1:123456789012:stream/{stream}");
                let built = workload::workload(
                    &lsub,
                    runtime,
                    &config::worker_config(&lsub, &arn).expect("config"),
                )
                .expect("the workers' objects");
                let name = lsub.metadata.name.clone().expect("a name");
                apply_in(controller, &ns.name, &built.role_binding).await;
                apply_in(controller, &ns.name, &built.service_account).await;
                apply_in(controller, &ns.name, &built.config_map).await;
                apply_in(controller, &ns.name, &built.deployment).await;
                kube::Api::<LogSubscription>::namespaced(controller.clone(), &ns.name)
                    .patch_status(&name, &apply, &Patch::Apply(floor_status(&arn, prefix, i)))
                    .await
                    .expect("apply the status");
            }
        })
        .await;
    let elapsed = started.elapsed();
    Floor { elapsed, ns }
}

/// LogSubscription `name`: the log group `group` into the existing stream
/// `stream`, workers scaled to zero.
fn subscription(name: &str, group: &str, stream: &str) -> serde_json::Value {
    json!({
        "apiVersion": "logsub.io/v1alpha1",
        "kind": "LogSubscription",
        "metadata": {"name": name},
        "spec": {
            "source": {
                "logGroups": {"names": [group]},
                "roleArn": "arn:aws:iam::123456789012:role/CWLtoKinesis",
            },
            "stream": {"existing": {"name": stream}},
            "sink": {"s3": {"bucket": "unused"}},
            "workers": {"replicas": 0},
        }
    })
}

/// The floor's field manager.
const FLOOR_MANAGER: &str = "logsub-bench-floor";

/// Server-side applies `object` in `namespace` as `client`.
async fn apply_in<K>(client: &kube::Client, namespace: &str, object: &K)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let name = kube::ResourceExt::name_any(object);
    kube::Api::<K>::namespaced(client.clone(), namespace)
        .patch(
            &name,
            &PatchParams::apply(FLOOR_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {} {name}: {e}", K::kind(&())));
}

/// A status of the shape logsub writes for these LogSubscriptions.
fn floor_status(arn: &str, prefix: &str, i: u64) -> serde_json::Value {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let condition = |type_: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": "True", "reason": reason, "message": message,
               "lastTransitionTime": now, "observedGeneration": 1})
    };
    json!({
        "apiVersion": "logsub.io/v1alpha1",
        "kind": "LogSubscription",
        "status": {
            "observedGeneration": 1,
            "conditions": [
                condition("Permitted", "Permitted", "permitted by policy floor"),
                condition("StreamReady", "StreamActive", &format!("stream {arn} is ACTIVE")),
                condition("SubscriptionFilterReady", "Subscribed", "1 of 1 log groups subscribed"),
                condition("WorkersAvailable", "WorkersAvailable", "0 of 0 workers available"),
            ],
            "streamArn": arn,
            "sink": "s3://unused",
            "logGroupCount": 1,
            "logGroups": [{"name": format!("{prefix}/{i}"), "filter": "Active"}],
            "workers": {"desired": 0, "available": 0},
        }
    })
}
