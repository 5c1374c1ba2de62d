//! The stack's secured Elasticsearch node: HTTPS with a certificate from a CA
//! the stack made for it, security on, users in the file realm and API keys
//! made through the security API. Each way in is tried as users set it up —
//! the CA and the credentials in Secrets, a LogSubscription, the controller's
//! workers — including what goes wrong: a CA that did not sign the node, a
//! key revoked, a password rotated. Refused deliveries wait; nothing is lost.

mod common;

use std::time::Duration;

use common::controller::{aws_secret, create, identity, log_group, put_events, start, wait_for};
use common::secure::SecureNode;
use common::{TestNamespace, active_stream, eventually, stack, unique};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use logsub::api::LogSubscription;
use serde_json::{Value, json};

const SETTLE: Duration = Duration::from_secs(120);

/// The sink trusts the CA it is given: the node's own CA lets it in; the
/// cluster's CA (a real CA, which did not sign the node) and none at all are
/// refused at the handshake, before any credentials are sent, and the error
/// says it was the certificate.
#[tokio::test]
async fn the_sink_trusts_the_given_ca_and_refuses_another() {
    use logsub::contract::config::ElasticsearchOutput;
    use logsub::worker::sink::elasticsearch::Elasticsearch;

    let node = SecureNode::acquire().await;
    let password = file_user(&unique("checker")).await;
    let dir = tempdir("checker");
    std::fs::write(dir.join("username"), password.0.as_bytes()).unwrap();
    std::fs::write(dir.join("password"), password.1.as_bytes()).unwrap();
    let sink = |ca: Option<String>| {
        let config: ElasticsearchOutput = serde_json::from_value(json!({
            "endpoint": node.base, "index": "unused", "caFile": ca,
            "auth": {"basic": {"secretDir": dir.display().to_string()}},
        }))
        .expect("config");
        Elasticsearch::new(&config).expect("sink")
    };
    let health = sink(Some(stack().var("SECURE_SEARCH_CA").to_owned()))
        .cluster_health()
        .await
        .expect("the node's CA");
    assert!(
        health.contains("green") || health.contains("yellow"),
        "{health}"
    );
    for ca in [Some(cluster_ca()), None] {
        let refused = sink(ca.clone())
            .cluster_health()
            .await
            .expect_err("another CA");
        assert_eq!(refused.category, "unavailable", "{ca:?}: {refused:?}");
        assert!(
            refused.message.contains("certificate") && !refused.message.contains("answered"),
            "{ca:?}: refused at the handshake, saying why: {refused:?}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// API keys made through the security API, through a LogSubscription over
/// HTTPS. One that may only read is refused each delivery (403), which wait,
/// and the status says so; the Secret given a key with only the rights a
/// writer needs (not even the cluster's health), everything arrives and the
/// status is Ready. That key revoked, deliveries are refused (401) and wait;
/// once the Secret holds a new key, the rest arrive, once.
#[tokio::test]
async fn api_keys_deliver_and_a_refused_one_waits_for_its_successor() {
    let node = SecureNode::acquire().await;
    let t = Subscription::new("apikey").await;
    let reader = node.api_key_with(&t.index, &["read"]).await;
    t.secret("search-ca", json!({"ca.crt": node_ca()})).await;
    t.secret("search-key", json!({"apiKey": reader.1})).await;
    t.subscribe(json!({
        "endpoint": node.base, "index": t.index,
        "auth": {"apiKey": {"secretRef": {"name": "search-key"}}},
        "tls": {"caSecretRef": {"name": "search-ca"}},
    }))
    .await;
    t.subscribed().await;
    t.put(0, 20).await;
    let why = t.sink_failing().await;
    assert!(why.contains("denied") && why.contains("403"), "{why}");
    assert_eq!(
        node.count(&t.index).await,
        0,
        "nothing stored while refused"
    );

    let first = node.api_key(&t.index).await;
    t.secret("search-key", json!({"apiKey": first.1})).await;
    node.wait_count(&t.index, 20).await;
    t.ready().await;

    node.invalidate(&first.0).await;
    t.put(20, 20).await;
    let why = t.sink_failing().await;
    assert!(why.contains("denied") && why.contains("401"), "{why}");
    assert_eq!(
        node.count(&t.index).await,
        20,
        "nothing stored while refused"
    );

    let second = node.api_key(&t.index).await;
    t.secret("search-key", json!({"apiKey": second.1})).await;
    node.wait_count(&t.index, 40).await;
    t.ready().await;
    t.done().await;
}

/// Basic auth from a `kubernetes.io/basic-auth` Secret over HTTPS. When the
/// cluster's password changes before the Secret does, deliveries are refused
/// and wait; once the Secret holds the new password, the rest arrive, once.
#[tokio::test]
async fn basic_auth_waits_for_its_rotated_secret() {
    let node = SecureNode::acquire().await;
    let t = Subscription::new("basic").await;
    let (user, password) = t.with_basic_auth(&node, &node_ca()).await;
    t.ready().await;
    t.put(0, 10).await;
    node.wait_count(&t.index, 10).await;

    let rotated = format!("{password}-2");
    set_password(&user, &rotated, Some(&password)).await;
    t.put(10, 10).await;
    let why = t.sink_failing().await;
    assert!(why.contains("denied") && why.contains("401"), "{why}");
    assert_eq!(
        node.count(&t.index).await,
        10,
        "nothing stored while refused"
    );

    t.secret(
        "search-user",
        json!({"username": user, "password": rotated}),
    )
    .await;
    node.wait_count(&t.index, 20).await;
    t.ready().await;
    t.done().await;
}

/// A LogSubscription given the wrong CA is not Ready and says the certificate
/// was refused; its events wait in the stream. Once the Secret holds the CA
/// that signed the node, the workers trust it and deliver them all, once.
#[tokio::test]
async fn a_wrong_ca_is_refused_until_its_secret_holds_the_right_one() {
    let node = SecureNode::acquire().await;
    let t = Subscription::new("wrongca").await;
    let wrong = std::fs::read_to_string(cluster_ca()).unwrap();
    t.with_basic_auth(&node, &wrong).await;
    // Said before any record needs the sink, and the events then wait.
    let why = t.sink_failing().await;
    assert!(why.contains("certificate"), "{why}");
    t.subscribed().await;
    t.put(0, 15).await;
    let lsub = t.get().await;
    assert_ne!(
        common::controller::condition(&lsub, "Ready").map(|c| c.0),
        Some("True".to_owned()),
        "not Ready while nothing can be delivered"
    );
    assert_eq!(node.count(&t.index).await, 0);

    t.secret("search-ca", json!({"ca.crt": node_ca()})).await;
    node.wait_count(&t.index, 15).await;
    t.ready().await;
    t.done().await;
}

// --- helpers ---

/// The PEM of the CA that signed the secured node.
fn node_ca() -> String {
    std::fs::read_to_string(stack().var("SECURE_SEARCH_CA")).expect("the node's CA")
}

/// The cluster's CA file: a real CA, which did not sign the secured node.
fn cluster_ca() -> String {
    let kubeconfig = std::fs::read_to_string(stack().kubeconfig()).expect("kubeconfig");
    kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority: "))
        .expect("the cluster's CA file")
        .to_owned()
}

fn tempdir(prefix: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique(prefix));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A file-realm user of the secured node (name, password), once it can sign in.
async fn file_user(name: &str) -> (String, String) {
    let (user, password) = (name.to_lowercase(), format!("{}-secret", unique("pw")));
    set_password(&user, &password, None).await;
    (user, password)
}

/// Sets `user`'s password and waits until the node has read it again: the
/// new one signs in and the `old` one, if any, is refused.
async fn set_password(user: &str, password: &str, old: Option<&str>) {
    common::stack_sh(&["secure-search", "user", user, password]);
    let node = SecureNode::client();
    let base = stack().var("SECURE_SEARCH_URL");
    let status = |password: String| {
        let (node, user) = (node.clone(), user.to_owned());
        async move {
            node.get(format!("{base}/_cluster/health"))
                .basic_auth(&user, Some(&password))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    eventually("the password in use", Duration::from_secs(30), || async {
        let new = status(password.to_owned()).await;
        let old = match old {
            Some(old) => status(old.to_owned()).await,
            None => 401,
        };
        (new == 200 && old == 401).then_some(())
    })
    .await;
}

/// One LogSubscription in a namespace of its own, with its controller, log
/// group and stream.
struct Subscription {
    ns: TestNamespace,
    logs: aws_sdk_cloudwatchlogs::Client,
    group: String,
    stream: String,
    index: String,
    env: Value,
    _controller: common::controller::Controller,
}

impl Subscription {
    async fn new(prefix: &str) -> Subscription {
        let client = stack().kube().await;
        let ns = TestNamespace::new(&client).await;
        let aws = stack().aws().await;
        let logs = aws_sdk_cloudwatchlogs::Client::new(&aws);
        let (stream, _) = active_stream(&aws_sdk_kinesis::Client::new(&aws), prefix, 1).await;
        let group = format!("/{}", unique(prefix));
        log_group(&logs, &group, "app-1").await;
        let env = aws_secret(&ns).await;
        let kubeconfig = identity(&ns).await;
        let controller = start(&ns, &kubeconfig, "30s");
        Subscription {
            ns,
            logs,
            group,
            stream,
            index: unique(prefix).to_lowercase(),
            env,
            _controller: controller,
        }
    }

    /// Creates the Secret `name` with `data` (as `stringData`), or replaces its data.
    async fn secret(&self, name: &str, data: Value) {
        let secrets = self.ns.api::<Secret>();
        let secret: Secret =
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
                .expect("secret");
        if secrets.get_opt(name).await.expect("get secret").is_some() {
            let data: serde_json::Map<String, Value> = data
                .as_object()
                .expect("an object")
                .iter()
                .map(|(k, v)| {
                    use base64::Engine;
                    let text = v.as_str().expect("text");
                    (
                        k.clone(),
                        base64::engine::general_purpose::STANDARD
                            .encode(text)
                            .into(),
                    )
                })
                .collect();
            secrets
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"data": data})),
                )
                .await
                .expect("update secret");
        } else {
            secrets
                .create(&PostParams::default(), &secret)
                .await
                .expect("create secret");
        }
    }

    async fn subscribe(&self, sink: Value) {
        create(
            &self.ns,
            json!({
                "apiVersion": "logsub.io/v1alpha1",
                "kind": "LogSubscription",
                "metadata": {"name": "app"},
                "spec": {
                    "source": {"logGroups": {"names": [self.group]}, "roleArn": "arn:aws:iam::123456789012:role/CWLtoKinesis"},
                    "stream": {"existing": {"name": self.stream}},
                    "transforms": [{"json": {}}],
                    "sink": {"elasticsearch": sink},
                    "workers": {"replicas": 1, "env": self.env, "batch": {"maxWait": "200ms"}},
                }
            }),
        )
        .await;
    }

    async fn get(&self) -> LogSubscription {
        self.ns
            .api::<LogSubscription>()
            .get("app")
            .await
            .expect("the LogSubscription")
    }

    async fn put(&self, from: usize, n: usize) {
        let events: Vec<String> = (from..from + n)
            .map(|i| format!(r#"{{"n": {i}}}"#))
            .collect();
        put_events(&self.logs, &self.group, "app-1", &events).await;
    }

    async fn ready(&self) {
        wait_for(&self.ns, "app", "Ready", SETTLE, |l| {
            (common::controller::condition(l, "Ready")? == ("True".into(), "Ready".into()))
                .then_some(())
        })
        .await;
    }

    /// Subscribes to `node` as a new file-realm user (its name and password)
    /// from a basic-auth Secret, trusting the CA `ca` (PEM) from another.
    async fn with_basic_auth(&self, node: &SecureNode, ca: &str) -> (String, String) {
        let (user, password) = file_user(&unique("writer")).await;
        self.secret("search-ca", json!({"ca.crt": ca})).await;
        self.secret(
            "search-user",
            json!({"username": user, "password": password}),
        )
        .await;
        self.subscribe(json!({
            "endpoint": node.base, "index": self.index,
            "auth": {"basic": {"secretRef": {"name": "search-user"}}},
            "tls": {"caSecretRef": {"name": "search-ca"}},
        }))
        .await;
        (user, password)
    }

    async fn subscribed(&self) {
        wait_for(&self.ns, "app", "SubscriptionFilterReady", SETTLE, |l| {
            (common::controller::condition(l, "SubscriptionFilterReady")?.0 == "True").then_some(())
        })
        .await;
    }

    /// The message of the condition that says the sink is failing.
    async fn sink_failing(&self) -> String {
        wait_for(&self.ns, "app", "SinkFailing", SETTLE, |l| {
            l.status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.reason == "SinkFailing")
                .map(|c| c.message.clone())
        })
        .await
    }

    async fn done(self) {
        self.ns.delete().await;
    }
}
