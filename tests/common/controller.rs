//! Running `logsub controller` as its own process, with its own least-privilege
//! identity: a ServiceAccount token bound to the ClusterRole `logsub rbac`
//! prints, in one namespace. Missing RBAC fails the test that needs it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{Api, Patch, PatchParams, PostParams};
use logsub::api::LogSubscription;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use super::pipeline::{free_port, metrics_text};
use super::{TestNamespace, eventually, stack};

/// A running controller, stopped (SIGKILL) when dropped.
pub struct Controller {
    pub child: Child,
    /// The port of its `/metrics`.
    pub admin: u16,
}

/// Gives `ns` a ServiceAccount bound to the controller's ClusterRole there,
/// and returns a kubeconfig that speaks as it.
pub async fn identity(ns: &TestNamespace) -> PathBuf {
    let client = stack().kube().await;
    super::install_crd(&client).await;
    use logsub::controller::resources::rbac;
    for role in rbac::cluster_roles() {
        Api::<ClusterRole>::all(client.clone())
            .patch(
                role.metadata.name.as_deref().expect("named"),
                &PatchParams::apply("logsub-tests").force(),
                &Patch::Apply(&role),
            )
            .await
            .expect("apply the controller's ClusterRoles");
    }
    let accounts: Api<ServiceAccount> = ns.api();
    let account = serde_json::from_value(json!({"metadata": {"name": "logsub-controller"}}))
        .expect("service account");
    accounts
        .create(&PostParams::default(), &account)
        .await
        .expect("create the controller's ServiceAccount");
    let subjects =
        json!([{"kind": "ServiceAccount", "name": "logsub-controller", "namespace": ns.name}]);
    let role_ref = |role: &str| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role});
    // The controller's rules in the namespace, where its leader Lease lives too.
    for (name, role) in [
        ("logsub-controller", rbac::CLUSTER_ROLE),
        ("logsub-controller-election", rbac::ELECTION_ROLE),
    ] {
        let binding: RoleBinding = serde_json::from_value(
            json!({"metadata": {"name": name}, "roleRef": role_ref(role), "subjects": subjects}),
        )
        .expect("binding");
        ns.api::<RoleBinding>()
            .create(&PostParams::default(), &binding)
            .await
            .expect("bind a ClusterRole in the namespace");
    }
    // Policies are cluster-scoped: read cluster-wide.
    let reader: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("logsub-controller-policies-{}", ns.name)},
        "roleRef": role_ref(rbac::POLICY_READER_ROLE),
        "subjects": subjects,
    }))
    .expect("binding");
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch(
            reader.metadata.name.as_deref().expect("named"),
            &PatchParams::apply("logsub-tests").force(),
            &Patch::Apply(&reader),
        )
        .await
        .expect("bind the policy reader");
    let token = accounts
        .create_token_request(
            "logsub-controller",
            &PostParams::default(),
            &TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(3600),
                    ..TokenRequestSpec::default()
                }),
                ..TokenRequest::default()
            },
        )
        .await
        .expect("a token for the controller")
        .status
        .expect("token status")
        .token;
    // The admin kubeconfig's cluster, with the ServiceAccount as its user.
    let mut kubeconfig =
        kube::config::Kubeconfig::read_from(stack().kubeconfig()).expect("read kubeconfig");
    let user = json!({"name": "logsub-controller", "user": {"token": token}});
    kubeconfig.auth_infos = vec![serde_json::from_value(user).expect("auth info")];
    for context in &mut kubeconfig.contexts {
        if let Some(c) = context.context.as_mut() {
            c.user = Some("logsub-controller".into());
        }
    }
    let path = std::env::temp_dir().join(format!("logsub-controller-{}.kubeconfig", ns.name));
    std::fs::write(&path, serde_saphyr::to_string(&kubeconfig).expect("yaml"))
        .expect("write kubeconfig");
    path
}

/// Starts a controller for `ns` only, as the identity of [`identity`]. AWS is
/// checked again every `resync`; worker pods serve their admin endpoints on a
/// port of their own (pods of the local node share the host's network).
pub fn start(ns: &TestNamespace, kubeconfig: &std::path::Path, resync: &str) -> Controller {
    start_with(ns, kubeconfig, resync, &[])
}

/// [`start`], with flags (`--flag value` pairs) added or replacing the defaults.
pub fn start_with(
    ns: &TestNamespace,
    kubeconfig: &std::path::Path,
    resync: &str,
    args: &[&str],
) -> Controller {
    start_with_env(ns, kubeconfig, resync, args, &[])
}

/// [`start_with`], without the environment variables `unset`.
pub fn start_with_env(
    ns: &TestNamespace,
    kubeconfig: &std::path::Path,
    resync: &str,
    args: &[&str],
    unset: &[&str],
) -> Controller {
    let admin = free_port();
    let mut flags: Vec<(String, String)> = [
        ("--worker-image", "logsub".to_owned()),
        ("--namespace", ns.name.clone()),
        ("--leader-election-namespace", ns.name.clone()),
        ("--lease-duration", "6s".to_owned()),
        ("--resync-period", resync.to_owned()),
        ("--status-interval", "2s".to_owned()),
        ("--admin-addr", format!("127.0.0.1:{admin}")),
        (
            "--aws-endpoint-url",
            stack().var("AWS_ENDPOINT_URL_KINESIS").to_owned(),
        ),
        ("--log", "info,logsub=debug".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for pair in args.chunks(2) {
        let [flag, value] = pair else {
            panic!("flags come in pairs: {args:?}");
        };
        match flags.iter_mut().find(|(k, _)| k == flag) {
            Some(existing) => existing.1 = (*value).to_owned(),
            None => flags.push(((*flag).to_owned(), (*value).to_owned())),
        }
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_logsub"));
    command
        .arg("controller")
        .args(flags.iter().flat_map(|(k, v)| [k, v]))
        .envs(stack().child_env())
        .env("KUBECONFIG", kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for key in unset {
        command.env_remove(key);
    }
    let child = command.spawn().expect("start the controller");
    Controller { child, admin }
}

impl Controller {
    /// Its `/metrics` text.
    pub async fn metrics(&self) -> String {
        eventually("the controller's /metrics", Duration::from_secs(30), || {
            metrics_text(self.admin)
        })
        .await
    }

    /// A counter or gauge from its `/metrics`, summed over the series whose
    /// labels contain every one of `labels`.
    pub async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| {
                l.split(['{', ' ']).next() == Some(name) && labels.iter().all(|x| l.contains(x))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// A Secret `aws` in `ns` with the stack's AWS credentials, and the worker
/// environment that reads them (where IRSA would be used in EKS).
pub async fn aws_secret(ns: &TestNamespace) -> Value {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "aws"},
        "stringData": {
            "AWS_ACCESS_KEY_ID": stack().var("AWS_ACCESS_KEY_ID"),
            "AWS_SECRET_ACCESS_KEY": stack().var("AWS_SECRET_ACCESS_KEY"),
        },
    }))
    .expect("secret");
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the AWS Secret");
    let from_secret = |key: &str| json!({"name": key, "valueFrom": {"secretKeyRef": {"name": "aws", "key": key}}});
    json!([
        from_secret("AWS_ACCESS_KEY_ID"),
        from_secret("AWS_SECRET_ACCESS_KEY"),
        {"name": "AWS_EC2_METADATA_DISABLED", "value": "true"},
    ])
}

/// Creates a LogSubscription from JSON.
pub async fn create(ns: &TestNamespace, lsub: Value) -> LogSubscription {
    let lsub: LogSubscription = serde_json::from_value(lsub).expect("a LogSubscription");
    ns.api::<LogSubscription>()
        .create(&PostParams::default(), &lsub)
        .await
        .expect("create the LogSubscription")
}

/// The LogSubscription's condition `type_`: (status, reason).
pub fn condition(lsub: &LogSubscription, type_: &str) -> Option<(String, String)> {
    lsub.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// The message of condition `type_` when it is False for `reason`.
pub fn failed_for(lsub: &LogSubscription, type_: &str, reason: &str) -> Option<String> {
    let c = lsub
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    (c.status == "False" && c.reason == reason).then(|| c.message.clone())
}

/// Waits until `check` holds for the LogSubscription `name`.
pub async fn wait_for<T>(
    ns: &TestNamespace,
    name: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&LogSubscription) -> Option<T>,
) -> T {
    let api = ns.api::<LogSubscription>();
    eventually(what, timeout, || {
        let api = api.clone();
        let check = &check;
        async move { check(&api.get(name).await.ok()?) }
    })
    .await
}

/// A LogSubscription of the log groups `groups` selects, through `stream`, with
/// no workers (the tests that use it check AWS and the status only).
pub fn without_workers(name: &str, groups: Value, stream: Value) -> Value {
    json!({
        "apiVersion": "logsub.io/v1alpha1",
        "kind": "LogSubscription",
        "metadata": {"name": name},
        "spec": {
            "source": {"logGroups": groups, "roleArn": "arn:aws:iam::123456789012:role/CWLtoKinesis"},
            "stream": stream,
            "sink": {"s3": {"bucket": "unused"}},
            "workers": {"replicas": 0},
        }
    })
}

/// Deletes every LogSubscription of `ns` and waits until the controller has
/// cleaned up after each and they are gone.
pub async fn delete_all(ns: &TestNamespace) {
    let api = ns.api::<LogSubscription>();
    api.delete_collection(&Default::default(), &Default::default())
        .await
        .expect("delete the LogSubscriptions");
    eventually(
        "every LogSubscription cleaned up and gone",
        Duration::from_secs(120),
        || async {
            let left = api.list(&Default::default()).await.ok()?;
            left.items.is_empty().then_some(())
        },
    )
    .await;
}

/// The IAM actions (`service:Operation`) the controller has called, from its
/// `logsub_controller_aws_calls_total` series.
pub async fn aws_actions(controller: &Controller) -> std::collections::BTreeSet<String> {
    let text = controller.metrics().await;
    let label = |line: &str, name: &str| -> Option<String> {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        let end = line[start..].find('"')? + start;
        Some(line[start..end].to_owned())
    };
    text.lines()
        .filter(|l| l.starts_with("logsub_controller_aws_calls_total{"))
        .filter_map(|l| {
            let service = label(l, "service")?.to_ascii_lowercase().replace(' ', "");
            let prefix = if service.contains("logs") {
                "logs"
            } else {
                "kinesis"
            };
            Some(format!("{prefix}:{}", label(l, "operation")?))
        })
        .collect()
}

/// Fails unless `docs/iam/controller-policy.json` allows every action the
/// controller called.
pub async fn assert_policy_allows_what_was_called(controller: &Controller) {
    let policy: Value = serde_json::from_str(
        &std::fs::read_to_string(super::repo().join("docs/iam/controller-policy.json"))
            .expect("docs/iam/controller-policy.json"),
    )
    .expect("the policy is JSON");
    let allowed: std::collections::BTreeSet<String> = policy["Statement"]
        .as_array()
        .expect("statements")
        .iter()
        .flat_map(|s| match &s["Action"] {
            Value::String(a) => vec![a.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    let called = aws_actions(controller).await;
    assert!(!called.is_empty(), "the controller called AWS");
    let missing: Vec<&String> = called.difference(&allowed).collect();
    assert!(
        missing.is_empty(),
        "docs/iam/controller-policy.json lacks {missing:?} (called: {called:?})"
    );
}

/// Creates the log group `name` with one log stream, `stream`.
pub async fn log_group(logs: &aws_sdk_cloudwatchlogs::Client, name: &str, stream: &str) {
    logs.create_log_group()
        .log_group_name(name)
        .send()
        .await
        .expect("create log group");
    logs.create_log_stream()
        .log_group_name(name)
        .log_stream_name(stream)
        .send()
        .await
        .expect("create log stream");
}

/// The subscription filters on `group`: name → (pattern, destination, role).
pub async fn filters(
    logs: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
) -> std::collections::BTreeMap<String, (String, String, String)> {
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

/// `kubectl auth can-i <verb> <resource> -n <namespace>` as the
/// ServiceAccount `account` of `ns`: the API server's own answer.
pub fn can_i(ns: &str, account: &str, verb: &str, resource: &str, namespace: &str) -> bool {
    let user = format!("system:serviceaccount:{ns}:{account}");
    let out = stack().kubectl(&[
        "auth", "can-i", verb, resource, "-n", namespace, "--as", &user,
    ]);
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!("kubectl auth can-i answered {other:?}: {out:?}"),
    }
}

/// Puts `messages` into the log stream `stream` of `group`, one millisecond apart.
pub async fn put_events(
    logs: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
    messages: &[String],
) {
    let now = logsub::time::now_millis();
    let events = messages.iter().enumerate().map(|(i, m)| {
        aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
            .timestamp(now + i64::try_from(i).expect("few events"))
            .message(m)
            .build()
            .expect("an event")
    });
    logs.put_log_events()
        .log_group_name(group)
        .log_stream_name(stream)
        .set_log_events(Some(events.collect()))
        .send()
        .await
        .expect("put log events");
}
