//! Finding and using the local stack (`hack/stack.sh`) from integration tests.
//!
//! The stack is found through the exports `hack/stack.sh env` prints (already in
//! the environment when run by `make test`). Every endpoint must be on loopback.
#![allow(dead_code)] // each test binary uses a different part

pub mod controller;
pub mod image;
pub mod pipeline;
pub mod s3;
pub mod search;
pub mod secure;
pub mod toxiproxy;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

pub struct Stack {
    vars: HashMap<String, String>,
}

pub fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        logsub::install_crypto_provider();
        Stack::discover()
    })
}

const NOT_UP: &str = "the local stack is not up: start it with `hack/stack.sh up` (or run `make test`, which starts and stops it)";

impl Stack {
    fn discover() -> Stack {
        let vars = if std::env::var("LOGSUB_STACK").is_ok() {
            std::env::vars().collect()
        } else {
            let script = repo().join("hack/stack.sh");
            let out = Command::new("bash")
                .arg(&script)
                .arg("env")
                .output()
                .expect("run hack/stack.sh env");
            assert!(
                out.status.success(),
                "{NOT_UP}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            parse_exports(&String::from_utf8_lossy(&out.stdout))
        };
        let stack = Stack { vars };
        for key in [
            "OPENSEARCH_URL",
            "OPENSEARCH3_URL",
            "ELASTICSEARCH_URL",
            "AWS_ENDPOINT_URL_KINESIS",
            "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS",
            "AWS_ENDPOINT_URL_S3",
        ] {
            let url = stack.var(key);
            let parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("{key}={url}: {e}"));
            assert!(
                matches!(parsed.host_str(), Some("127.0.0.1" | "localhost")),
                "{key}={url}: tests talk only to servers on 127.0.0.1"
            );
            let port = parsed.port_or_known_default().expect("port");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            assert!(
                TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok(),
                "{NOT_UP} ({key} {url} does not answer)"
            );
        }
        stack
    }

    pub fn var(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("{NOT_UP} ({key} is not set)"))
    }

    pub fn kubeconfig(&self) -> PathBuf {
        PathBuf::from(self.var("KUBECONFIG"))
    }

    /// The API server's URL, from the kubeconfig.
    pub fn api_server(&self) -> String {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("read kubeconfig");
        kubeconfig.clusters[0]
            .cluster
            .as_ref()
            .and_then(|c| c.server.clone())
            .expect("server URL")
    }

    pub fn node_name(&self) -> &str {
        self.var("LOGSUB_STACK_NODE")
    }

    pub async fn kube(&self) -> kube::Client {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("read kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("kubeconfig");
        assert_eq!(
            config.cluster_url.host(),
            Some("127.0.0.1"),
            "the API server must be on loopback"
        );
        kube::Client::try_from(config).expect("kube client")
    }

    /// AWS SDK configuration for moto (Logs, Kinesis) and SeaweedFS (S3).
    pub async fn aws(&self) -> aws_config::SdkConfig {
        let credentials = aws_sdk_s3::config::Credentials::new(
            self.var("AWS_ACCESS_KEY_ID"),
            self.var("AWS_SECRET_ACCESS_KEY"),
            None,
            None,
            "logsub-stack",
        );
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(self.var("AWS_REGION").to_owned()))
            .credentials_provider(credentials)
            .load()
            .await
    }

    /// The environment a child process needs to reach the stack.
    pub fn child_env(&self) -> Vec<(String, String)> {
        [
            "KUBECONFIG",
            "AWS_ENDPOINT_URL_KINESIS",
            "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS",
            "AWS_ENDPOINT_URL_STS",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION",
            "AWS_EC2_METADATA_DISABLED",
        ]
        .iter()
        .map(|k| ((*k).to_owned(), self.var(k).to_owned()))
        .collect()
    }

    /// A program from the stack's PATH (kubectl, helm), else from the process's.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.var("PATH")
            .split(':')
            .map(|dir| Path::new(dir).join(name))
            .find(|path| path.exists())
            .unwrap_or_else(|| PathBuf::from(name))
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        let bin_dir = self
            .var("PATH")
            .split(':')
            .next()
            .map(PathBuf::from)
            .unwrap_or_default();
        let kubectl = bin_dir.join("kubectl");
        let program = if kubectl.exists() {
            kubectl
        } else {
            PathBuf::from("kubectl")
        };
        Command::new(program)
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .output()
            .expect("run kubectl")
    }
}

fn parse_exports(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

/// Runs `hack/stack.sh` with `args` (start or stop an optional server, print
/// the environment); its standard output. A failure fails the test.
pub fn stack_sh(args: &[&str]) -> String {
    let out = Command::new(repo().join("hack/stack.sh"))
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("hack/stack.sh");
    assert!(out.status.success(), "hack/stack.sh {args:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One of the stack's servers that tests start and stop (a fault node), held
/// by one test at a time until dropped. `make test` runs test binaries at once,
/// so the lock is a file lock, which every process sees.
pub struct Held(#[allow(dead_code)] std::fs::File);

pub fn hold(server: &str) -> Held {
    let dir = Path::new(stack().var("LOGSUB_STACK_LOCKS"));
    std::fs::create_dir_all(dir).expect("the stack's lock directory");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{server}.lock")))
        .expect("a lock file");
    // Blocks this test's thread only: it has nothing else to do meanwhile.
    file.lock().expect("the lock");
    Held(file)
}

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    format!(
        "{prefix}-{}-{:x}{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a Kinesis stream with `shards` shards and waits for it to be ACTIVE;
/// returns its name and ARN.
pub async fn active_stream(
    client: &aws_sdk_kinesis::Client,
    prefix: &str,
    shards: i32,
) -> (String, String) {
    let name = unique(prefix);
    let arn = stream_named(client, &name, shards).await;
    (name, arn)
}

/// Creates the stream `name` with `shards` shards and waits until it is
/// ACTIVE; returns its ARN.
pub async fn stream_named(client: &aws_sdk_kinesis::Client, name: &str, shards: i32) -> String {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .expect("create stream");
    eventually("an ACTIVE stream", Duration::from_secs(30), || async {
        let s = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .ok()?
            .stream_description_summary?;
        (s.stream_status == aws_sdk_kinesis::types::StreamStatus::Active).then_some(s.stream_arn)
    })
    .await
}

/// Polls `check` until it returns Some, or fails after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A namespace of its own for one test, deleted by `delete`.
pub struct TestNamespace {
    client: kube::Client,
    pub name: String,
}

impl TestNamespace {
    pub async fn new(client: &kube::Client) -> TestNamespace {
        Self::labelled(client, "test", &[]).await
    }

    /// A namespace named `<prefix>-<unique>` with `labels`.
    pub async fn labelled(
        client: &kube::Client,
        prefix: &str,
        labels: &[(&str, &str)],
    ) -> TestNamespace {
        Self::named(client, &unique(prefix), labels).await
    }

    /// The namespace `name`, with `labels`.
    pub async fn named(
        client: &kube::Client,
        name: &str,
        labels: &[(&str, &str)],
    ) -> TestNamespace {
        let name = name.to_owned();
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(client.clone());
        let labels: std::collections::BTreeMap<&str, &str> = labels.iter().copied().collect();
        let ns = serde_json::from_value(
            serde_json::json!({"metadata": {"name": name, "labels": labels}}),
        )
        .expect("namespace");
        namespaces
            .create(&kube::api::PostParams::default(), &ns)
            .await
            .expect("create namespace");
        // The service account controller creates `default` shortly after.
        let accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
            kube::Api::namespaced(client.clone(), &name);
        let ready = kube::runtime::wait::await_condition(accounts, "default", |sa: Option<&_>| {
            sa.is_some()
        });
        tokio::time::timeout(Duration::from_secs(30), ready)
            .await
            .expect("default service account")
            .expect("watch");
        TestNamespace {
            client: client.clone(),
            name,
        }
    }

    pub fn api<K>(&self) -> kube::Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        kube::Api::namespaced(self.client.clone(), &self.name)
    }

    pub async fn delete(self) {
        // A controller identity made here may hold a cluster-wide binding.
        let bindings: kube::Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> =
            kube::Api::all(self.client.clone());
        let _ = bindings
            .delete(
                &format!("logsub-controller-policies-{}", self.name),
                &kube::api::DeleteParams::default(),
            )
            .await;
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(self.client.clone());
        let _ = namespaces
            .delete(&self.name, &kube::api::DeleteParams::default())
            .await;
    }
}

/// A label that keeps a namespace out of [`TEST_POLICY`]: tests of policies
/// give their namespaces only the policies they write.
pub const OWN_POLICIES: &str = "logsub.io/own-policies";
/// The policy that lets every other test namespace do anything, as the
/// chart's `default` policy does on a single-team cluster.
pub const TEST_POLICY: &str = "logsub-tests";

/// Applies the CRDs as `logsub crd` prints them, waits until they are
/// served, and applies [`TEST_POLICY`].
pub async fn install_crd(client: &kube::Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    for crd in [logsub::api::crd(), logsub::api::policy_crd()] {
        let name = crd.metadata.name.clone().expect("crd name");
        crds.patch(
            &name,
            &kube::api::PatchParams::apply("logsub-tests").force(),
            &kube::api::Patch::Apply(&crd),
        )
        .await
        .expect("apply the CRD");
        let established = kube::runtime::wait::await_condition(
            crds.clone(),
            &name,
            kube::runtime::wait::conditions::is_crd_established(),
        );
        tokio::time::timeout(Duration::from_secs(30), established)
            .await
            .expect("CRD Established within 30 s")
            .expect("watch the CRD");
    }
    let policy: logsub::api::LogSubscriptionPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "logsub.io/v1alpha1",
        "kind": "LogSubscriptionPolicy",
        "metadata": {"name": TEST_POLICY},
        "spec": {
            "namespaces": {"selector": {"matchExpressions": [{"key": OWN_POLICIES, "operator": "DoesNotExist"}]}},
            "logGroups": {"patterns": [".*"]},
            "streams": {"managed": {"onDemand": true}, "existing": ["*"]},
            "sinks": {
                "elasticsearch": [
                    {"endpoint": "https://*:*"},
                    {"endpoint": "http://*:*", "credentialsOverHttp": true},
                ],
                "s3": [{"bucket": "*", "endpoint": "*", "credentialsOverHttp": true}],
            },
            "roles": {"delivery": ["*"], "workers": ["*"], "aws": ["*"]},
            "workers": {"env": ["*"]},
        },
    }))
    .expect("the tests' policy");
    kube::Api::<logsub::api::LogSubscriptionPolicy>::all(client.clone())
        .patch(
            TEST_POLICY,
            &kube::api::PatchParams::apply("logsub-tests").force(),
            &kube::api::Patch::Apply(&policy),
        )
        .await
        .expect("apply the tests' policy");
}

/// Prints a fault trial's line, and appends it to `LOGSUB_TRIALS_FILE` when
/// set (`make test` prints them all at its end).
pub fn report(line: &str) {
    eprintln!("{line}");
    if let Ok(path) = std::env::var("LOGSUB_TRIALS_FILE") {
        use std::io::Write;
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(file, "{line}");
        }
    }
}

/// One fault trial's outcome, checked and printed on one line: every event
/// sent is there once (as a document or a dead letter), none twice, none lost.
pub fn trial(
    name: &str,
    sent: &[String],
    delivered: &[String],
    dead_lettered: usize,
    recovery: Duration,
) {
    let unique: std::collections::BTreeSet<&String> = delivered.iter().collect();
    let duplicates = delivered.len() - unique.len();
    let lost = sent.iter().filter(|s| !unique.contains(s)).count();
    report(&format!(
        "trial {name}: sent {}, delivered {}, unique {}, duplicates {duplicates}, dead-lettered {dead_lettered}, lost {lost}, recovery {:.1}s",
        sent.len(),
        delivered.len(),
        unique.len(),
        recovery.as_secs_f64()
    ));
    assert_eq!(lost, 0, "{name}: events lost");
    assert_eq!(duplicates, 0, "{name}: events delivered twice");
}

/// A kubeconfig like `path`'s that reaches the API server at `server`
/// (through a fault proxy); its path.
pub fn kubeconfig_via(path: &Path, server: &str) -> PathBuf {
    let mut kubeconfig = kube::config::Kubeconfig::read_from(path).expect("read kubeconfig");
    for cluster in &mut kubeconfig.clusters {
        if let Some(c) = cluster.cluster.as_mut() {
            c.server = Some(server.to_owned());
        }
    }
    let out = std::env::temp_dir().join(format!("{}.kubeconfig", unique("via")));
    std::fs::write(&out, serde_saphyr::to_string(&kubeconfig).expect("yaml")).expect("write");
    out
}
