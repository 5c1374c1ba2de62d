//! The pipeline under test: a Kinesis stream, a log group subscribed to it, a
//! namespace for the leases, and `logsub worker` processes reading it.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use aws_sdk_cloudwatchlogs::types::{Distribution, InputLogEvent};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::ListParams;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::{TestNamespace, active_stream, stack};

/// A document and the worker that wrote it.
#[derive(Debug)]
pub struct Delivered {
    pub by: String,
    pub doc: Value,
}

pub struct Setup {
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub kinesis: aws_sdk_kinesis::Client,
    pub stream: String,
    pub arn: String,
    pub group: String,
    pub config: std::path::PathBuf,
    pub ns: TestNamespace,
}

impl Setup {
    /// Rewrites the worker configuration with this sink and these transforms
    /// (YAML flow values), e.g. `{stdout: {}}` and `[{json: {}}]`.
    pub fn configure(&self, sink: &str, transforms: &str) {
        self.configure_batches(sink, transforms, "{maxWait: 200ms}");
    }

    /// As [`Setup::configure`], with these batch limits.
    pub fn configure_batches(&self, sink: &str, transforms: &str, batch: &str) {
        std::fs::write(
            &self.config,
            format!(
                "subscription: {{namespace: {}, name: w}}\nstreamArn: {}\nsink: {sink}\n\
                 transforms: {transforms}\n\
                 leases: {{duration: 4s, renewInterval: 1s, checkpointInterval: 1s}}\n\
                 batch: {batch}\n",
                self.ns.name, self.arn
            ),
        )
        .expect("config file");
    }
}

pub async fn setup(shards: i32, streams: &[&str]) -> Setup {
    let aws = stack().aws().await;
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    let logs = aws_sdk_cloudwatchlogs::Client::new(&aws);
    let (name, arn) = active_stream(&kinesis, "worker", shards).await;
    let group = format!("/logsub/worker/{name}");
    logs.create_log_group()
        .log_group_name(&group)
        .send()
        .await
        .expect("group");
    for s in streams {
        logs.create_log_stream()
            .log_group_name(&group)
            .log_stream_name(*s)
            .send()
            .await
            .expect("stream");
    }
    logs.put_subscription_filter()
        .log_group_name(&group)
        .filter_name("logsub-test")
        .filter_pattern("")
        .destination_arn(&arn)
        .role_arn("arn:aws:iam::123456789012:role/CWLtoKinesis")
        .distribution(Distribution::ByLogStream)
        .send()
        .await
        .expect("filter");
    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    let config = std::env::temp_dir().join(format!("{name}.yaml"));
    let setup = Setup {
        logs,
        kinesis,
        stream: name,
        arn,
        group,
        config,
        ns,
    };
    setup.configure("{stdout: {}}", "[]");
    setup
}

/// Starts a worker; its stdout lines go to `lines`.
pub fn worker(
    config: &std::path::Path,
    identity: &str,
    lines: mpsc::UnboundedSender<Delivered>,
) -> Child {
    worker_with_admin(config, identity, lines).0
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Starts a worker and returns the port of its admin endpoints too.
pub fn worker_with_admin(
    config: &std::path::Path,
    identity: &str,
    lines: mpsc::UnboundedSender<Delivered>,
) -> (Child, u16) {
    worker_with_env(config, identity, lines, &[])
}

/// [`worker_with_admin`], with environment variables added or replaced (an
/// AWS endpoint through a fault proxy, another kubeconfig).
pub fn worker_with_env(
    config: &std::path::Path,
    identity: &str,
    lines: mpsc::UnboundedSender<Delivered>,
    env: &[(&str, &str)],
) -> (Child, u16) {
    let admin = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_logsub"))
        .args(["worker", "--config"])
        .arg(config)
        .args(["--identity", identity])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .envs(stack().child_env())
        .envs(env.iter().copied())
        .env("LOGSUB_LOG", "info,logsub=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the worker");
    let stdout = child.stdout.take().expect("stdout");
    let who = identity.to_owned();
    tokio::spawn(async move {
        let mut lines_in = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines_in.next_line().await {
            let doc: Value =
                serde_json::from_str(&line).expect("each stdout line is a JSON document");
            if lines
                .send(Delivered {
                    by: who.clone(),
                    doc,
                })
                .is_err()
            {
                return;
            }
        }
    });
    (child, admin)
}

pub async fn put(setup: &Setup, stream: &str, messages: &[String]) {
    put_at(setup, stream, logsub::time::now_millis(), messages).await;
}

/// [`put`], the events timed from `at` (ms since the epoch) on.
pub async fn put_at(setup: &Setup, stream: &str, at: i64, messages: &[String]) {
    let events = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            InputLogEvent::builder()
                .timestamp(at + i as i64)
                .message(m)
                .build()
                .expect("event")
        })
        .collect();
    setup
        .logs
        .put_log_events()
        .log_group_name(&setup.group)
        .log_stream_name(stream)
        .set_log_events(Some(events))
        .send()
        .await
        .expect("put log events");
}

pub async fn collect_delivered(
    rx: &mut mpsc::UnboundedReceiver<Delivered>,
    want: usize,
) -> Vec<Delivered> {
    let mut docs = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while docs.len() < want {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(doc)) => docs.push(doc),
            _ => panic!("only {} of {want} documents arrived: {docs:?}", docs.len()),
        }
    }
    docs
}

pub async fn collect(rx: &mut mpsc::UnboundedReceiver<Delivered>, want: usize) -> Vec<Value> {
    collect_delivered(rx, want)
        .await
        .into_iter()
        .map(|d| d.doc)
        .collect()
}

pub async fn stop(mut child: Child) {
    let pid = child.id().expect("pid") as i32;
    // SIGTERM, as Kubernetes stops a pod.
    assert_eq!(unsafe_kill(pid), 0);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits")
        .expect("wait");
    assert!(
        status.success(),
        "the worker exits cleanly on SIGTERM: {status}"
    );
}

pub fn unsafe_kill(pid: i32) -> i32 {
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .map_or(1, |s| s.code().unwrap_or(1))
}

/// Deletes every lease in `ns`: the next worker reads the whole stream again.
pub async fn forget_checkpoints(ns: &str) {
    let leases: kube::Api<Lease> = kube::Api::namespaced(stack().kube().await, ns);
    leases
        .delete_collection(&kube::api::DeleteParams::default(), &ListParams::default())
        .await
        .expect("delete leases");
}

/// The leases of the subscription under test in `ns`.
pub async fn leases(ns: &str) -> Vec<Lease> {
    let leases: kube::Api<Lease> = kube::Api::namespaced(stack().kube().await, ns);
    leases
        .list(&ListParams::default().labels("logsub.io/subscription=w"))
        .await
        .expect("leases")
        .items
}

/// How many leases each worker holds ("" for none).
pub async fn holders(ns: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for lease in leases(ns).await {
        let holder = lease
            .spec
            .and_then(|s| s.holder_identity)
            .unwrap_or_default();
        *out.entry(holder).or_default() += 1;
    }
    out
}

/// A worker's `/metrics` page, once it answers.
pub async fn metrics_text(admin: u16) -> Option<String> {
    reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// The value of a series on a worker's `/metrics` (name with its labels), once it exists.
pub async fn metric(admin: u16, name: &str) -> Option<f64> {
    let text = metrics_text(admin).await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The checkpoint of each lease ("" for none yet).
pub async fn lease_checkpoints(ns: &str) -> Vec<String> {
    leases(ns)
        .await
        .iter()
        .map(|l| {
            l.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("logsub.io/checkpoint"))
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

/// The health the holder of each lease publishes.
pub async fn published_health(ns: &str) -> Vec<Value> {
    leases(ns)
        .await
        .iter()
        .filter_map(|l| l.metadata.annotations.as_ref()?.get("logsub.io/health"))
        .map(|h| serde_json::from_str(h).expect("health is JSON"))
        .collect()
}

/// What the holder of some lease of `ns` publishes under `key` (e.g.
/// `sinkError`), awaited for up to `within`.
pub async fn published(ns: &str, key: &str, within: Duration) -> String {
    super::eventually(&format!("{key} on a lease"), within, || async {
        published_health(ns)
            .await
            .into_iter()
            .find_map(|h| h[key].as_str().map(str::to_owned))
    })
    .await
}
