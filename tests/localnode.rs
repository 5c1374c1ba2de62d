//! The stack's local node runs Pods as real processes: a Deployment becomes
//! Available, its process sees the Pod's env and files, deleting the Pod stops the
//! process and a replacement starts; crashes restart, unmapped images wait.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::{TestNamespace, eventually, stack};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::wait::{Condition, await_condition};
use serde_json::{Value, json};

const PROBE_IMAGE: &str = "logsub-test/probe:1";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn deployment_available() -> impl Condition<Deployment> {
    |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter().any(|c| {
                    c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")
                })
            })
    }
}

async fn wait<K, C>(api: Api<K>, name: &str, what: &str, condition: C) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    C: Condition<K>,
{
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(api, name, condition),
    )
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    .expect("watch")
    .unwrap_or_else(|| panic!("{what}: object gone"))
}

/// `GET http://{addr}{path}`: status and body, or None when nothing answers.
async fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let resp = reqwest::get(format!("http://{addr}{path}")).await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

async fn ready_pod(pods: &Api<Pod>, selector: &str, except: Option<&str>) -> Pod {
    eventually("a ready pod", Duration::from_secs(60), || async {
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .ok()?;
        list.items.into_iter().find(|p| {
            p.metadata.uid.as_deref() != except
                && p.metadata.deletion_timestamp.is_none()
                && p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
    })
    .await
}

/// Where the host reaches `port` of the Pod: its own address.
fn at(pod: &Pod, port: u16) -> String {
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .expect("a Pod IP");
    format!("{ip}:{port}")
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn deployment_runs_as_local_processes_and_pod_deletion_replaces_them() {
    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    let port = free_port();

    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "creds"}, "stringData": {"token": "s3cr3t"}}))
    .expect("secret");
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    let config: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "conf"}, "data": {"worker.yaml": "shards: all\n"}}))
    .expect("configmap");
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &config)
        .await
        .expect("create configmap");

    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "probe"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "probe"}},
            "template": {
                "metadata": {"labels": {"app": "probe"}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "probe",
                        "image": PROBE_IMAGE,
                        "env": [
                            {"name": "PROBE_PORT", "value": port.to_string()},
                            {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                            {"name": "GREETING", "value": "hello $(POD_NAME)"},
                        ],
                        "volumeMounts": [{"name": "conf", "mountPath": "/etc/logsub-test", "readOnly": true}],
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 1},
                        "securityContext": {"readOnlyRootFilesystem": true},
                    }],
                    "volumes": [{"name": "conf", "configMap": {"name": "conf"}}],
                },
            },
        },
    }))
    .expect("deployment");
    let deployments = ns.api::<Deployment>();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
    wait(
        deployments.clone(),
        "probe",
        "Deployment Available",
        deployment_available(),
    )
    .await;

    let pods = ns.api::<Pod>();
    let pod = ready_pod(&pods, "app=probe", None).await;
    let pod_name = pod.metadata.name.clone().expect("pod name");
    assert_eq!(
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(stack().node_name())
    );
    let status = pod.status.as_ref().expect("status");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let container = &status
        .container_statuses
        .as_ref()
        .expect("container statuses")[0];
    assert!(
        container.ready
            && container
                .state
                .as_ref()
                .and_then(|s| s.running.as_ref())
                .is_some()
    );

    // The process is real, and sees the Pod's environment and files.
    let addr = at(&pod, port);
    let (_, pid) = get(&addr, "/pid").await.expect("probe answers");
    let pid: u32 = pid.parse().expect("pid");
    assert!(process_alive(pid));
    let (_, env) = get(&addr, "/env").await.expect("env");
    let env: Value = serde_json::from_str(&env).expect("env json");
    assert_eq!(env["API_TOKEN"], "s3cr3t");
    assert_eq!(env["POD_NAME"], pod_name.as_str());
    assert_eq!(env["POD_NAMESPACE"], ns.name.as_str());
    assert_eq!(env["GREETING"], format!("hello {pod_name}"));
    assert_eq!(env["KUBERNETES_SERVICE_HOST"], "127.0.0.1");
    assert!(
        env.get("CARGO").is_none(),
        "the process must not inherit the node's environment"
    );

    let (code, body) = get(&addr, "/file?path=/etc/logsub-test/worker.yaml")
        .await
        .expect("file");
    assert_eq!((code, body.as_str()), (200, "shards: all\n"));
    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    let (_, namespace) = get(&addr, &format!("/file?path={sa}/namespace"))
        .await
        .expect("namespace file");
    assert_eq!(namespace, ns.name);
    let (_, token) = get(&addr, &format!("/file?path={sa}/token"))
        .await
        .expect("token file");
    assert_eq!(token.split('.').count(), 3, "a JWT");
    let (_, ca) = get(&addr, &format!("/file?path={sa}/ca.crt"))
        .await
        .expect("ca file");
    assert!(ca.contains("BEGIN CERTIFICATE"));
    // Those files exist for this Pod only, not on the host.
    assert!(!std::path::Path::new("/etc/logsub-test/worker.yaml").exists());
    let (code, _) = get(&addr, "/write?path=/tmp/logsub-probe-write")
        .await
        .expect("write");
    assert_eq!(code, 500, "readOnlyRootFilesystem holds");

    // The token authenticates to the API server as the Pod's service account.
    let mut config = kube::Config::new(stack().api_server().parse().expect("url"));
    config.root_cert = Some(vec![pem_to_der(&ca)]);
    config.auth_info.token = Some(token.into());
    let as_pod = kube::Client::try_from(config).expect("client");
    let err = Api::<Secret>::namespaced(as_pod, &ns.name)
        .list(&ListParams::default())
        .await
        .expect_err("no RBAC grants this");
    assert!(
        err.to_string()
            .contains(&format!("system:serviceaccount:{}:default", ns.name)),
        "{err}"
    );

    // `kubectl logs` reaches the container's output through the API server.
    let logs = stack().kubectl(&["logs", "-n", &ns.name, &pod_name]);
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(
        logs.contains(&format!("probe listening on port {port} pid {pid}")),
        "kubectl logs: {logs}"
    );

    // Deleting the Pod stops the process; the ReplicaSet's replacement runs anew.
    let old_uid = pod.metadata.uid.clone();
    pods.delete(&pod_name, &DeleteParams::default())
        .await
        .expect("delete pod");
    eventually(
        "the old process to exit",
        Duration::from_secs(30),
        || async { (!process_alive(pid)).then_some(()) },
    )
    .await;
    let replacement = ready_pod(&pods, "app=probe", old_uid.as_deref()).await;
    assert_ne!(
        replacement.metadata.name.as_deref(),
        Some(pod_name.as_str())
    );
    let new_addr = at(&replacement, port);
    let (_, new_pid) = eventually("the new process to answer", Duration::from_secs(30), || {
        get(&new_addr, "/pid")
    })
    .await;
    assert_ne!(new_pid.parse::<u32>().expect("pid"), pid);

    let log = std::fs::read_to_string(format!(
        "{}/pods/{}_{}_probe.log",
        stack().var("LOGSUB_STACK_LOGS"),
        ns.name,
        pod_name
    ))
    .expect("container log in the stack's log directory");
    assert!(
        log.contains("probe stopped on SIGTERM"),
        "the process got SIGTERM:\n{log}"
    );
    ns.delete().await;
}

/// Each Pod has a network of its own: two replicas listen on one port, each
/// at its own address, where the host reaches it; a Pod reaches the other
/// by address, itself at 127.0.0.1 and the stack's servers at theirs; a
/// deleted Pod's address answers no more.
#[tokio::test]
async fn pods_listen_on_one_port_each_at_an_address_of_their_own() {
    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    let port = free_port();
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "twins"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "twins"}},
            "template": {
                "metadata": {"labels": {"app": "twins"}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "probe",
                        "image": PROBE_IMAGE,
                        "env": [
                            {"name": "PROBE_PORT", "value": port.to_string()},
                            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        ],
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 1},
                    }],
                },
            },
        },
    }))
    .expect("deployment");
    ns.api::<Deployment>()
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
    wait(
        ns.api::<Deployment>(),
        "twins",
        "both replicas available",
        |d: Option<&Deployment>| {
            d.and_then(|d| d.status.as_ref())
                .is_some_and(|s| s.available_replicas == Some(2))
        },
    )
    .await;
    let pods = ns.api::<Pod>();
    let twins = pods
        .list(&ListParams::default().labels("app=twins"))
        .await
        .expect("list");
    let [a, b] = &twins.items[..] else {
        panic!("{} pods", twins.items.len());
    };
    let (at_a, at_b) = (at(a, port), at(b, port));
    assert_ne!(at_a, at_b, "each Pod has an address of its own");
    let mut pids = Vec::new();
    for (pod, addr) in [(a, &at_a), (b, &at_b)] {
        let ip: std::net::Ipv4Addr = addr
            .split(':')
            .next()
            .and_then(|ip| ip.parse().ok())
            .expect("an IPv4 address");
        assert!(
            ip.is_loopback() && ip != std::net::Ipv4Addr::LOCALHOST,
            "{ip}"
        );
        let (_, pid) = get(addr, "/pid")
            .await
            .expect("the Pod answers at its address");
        pids.push(pid);
        let (_, env) = get(addr, "/env").await.expect("env");
        let env: Value = serde_json::from_str(&env).expect("env json");
        assert_eq!(
            Some(format!(
                "{}:{port}",
                env["POD_IP"].as_str().expect("POD_IP")
            )),
            Some(addr.clone()),
            "{:?} sees its own address",
            pod.metadata.name
        );
    }
    assert_ne!(pids[0], pids[1], "two processes, one port");

    // From inside a: b by its address, itself at 127.0.0.1, a stack server at its own.
    let fetch = |url: String| {
        let at_a = at_a.clone();
        async move {
            get(&at_a, &format!("/fetch?url={}", urlencoding(&url)))
                .await
                .expect("a answers")
        }
    };
    assert_eq!(
        fetch(format!("http://{at_b}/pid")).await,
        (200, pids[1].clone())
    );
    assert_eq!(
        fetch(format!("http://127.0.0.1:{port}/pid")).await,
        (200, pids[0].clone())
    );
    let (code, body) = fetch(format!("{}/", stack().var("OPENSEARCH_URL"))).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("cluster_name"), "{body}");

    // `kubectl port-forward` reaches a's port through the API server, from
    // inside a's network.
    let mut forward = tokio::process::Command::new(stack().tool("kubectl"))
        .args(["port-forward", "-n", &ns.name])
        .arg(format!("pod/{}", a.metadata.name.as_deref().expect("name")))
        .arg(format!(":{port}"))
        .env("KUBECONFIG", stack().kubeconfig())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl port-forward");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        forward.stdout.take().expect("stdout"),
    ));
    let local = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("kubectl output") {
            // "Forwarding from 127.0.0.1:41234 -> 8080"
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                return rest.split_whitespace().next().map(str::to_owned);
            }
        }
        None
    })
    .await
    .expect("kubectl port-forward listening")
    .expect("a local port");
    let (_, pid) = get(&format!("127.0.0.1:{local}"), "/pid")
        .await
        .expect("a answers through the forward");
    assert_eq!(pid, pids[0]);
    // A request sent whole and its sending side closed still gets its answer.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(format!("127.0.0.1:{local}"))
            .await
            .expect("connect to the forward");
        conn.write_all(b"GET /pid HTTP/1.0\r\n\r\n")
            .await
            .expect("send");
        conn.shutdown().await.expect("half-close");
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), conn.read_to_string(&mut answer))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(
            answer.starts_with("HTTP/1.0 200") && answer.ends_with(&pids[0]),
            "{answer:?}"
        );
    }
    forward.kill().await.expect("stop kubectl");

    // Deleted, b's process ends and its address answers neither the host nor a.
    let b_pid: u32 = pids[1].parse().expect("pid");
    pods.delete(
        b.metadata.name.as_deref().expect("name"),
        &DeleteParams::default(),
    )
    .await
    .expect("delete b");
    eventually("b's process to exit", Duration::from_secs(30), || async {
        (!process_alive(b_pid)).then_some(())
    })
    .await;
    eventually(
        "b's address to go quiet",
        Duration::from_secs(30),
        || async { get(&at_b, "/pid").await.is_none().then_some(()) },
    )
    .await;
    let (code, body) = fetch(format!("http://{at_b}/pid")).await;
    assert_eq!(code, 502, "a reached a deleted Pod: {body}");
    ns.delete().await;
}

fn urlencoding(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("base64 PEM")
}

async fn bare_pod(
    ns: &TestNamespace,
    name: &str,
    image: &str,
    env: Value,
    restart: &str,
) -> Api<Pod> {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "main", "image": image, "env": env}],
        },
    }))
    .expect("pod");
    let pods = ns.api::<Pod>();
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    pods
}

fn container_status(pod: Option<&Pod>) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    pod?.status.as_ref()?.container_statuses.as_ref()?.first()
}

#[tokio::test]
async fn crashing_container_restarts_with_its_exit_code_recorded() {
    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    let env = json!([
        {"name": "PROBE_PORT", "value": free_port().to_string()},
        {"name": "PROBE_EXIT_AFTER", "value": "0.2"},
        {"name": "PROBE_EXIT_CODE", "value": "3"},
    ]);
    let pods = bare_pod(&ns, "crasher", PROBE_IMAGE, env, "Always").await;
    let pod = wait(
        pods,
        "crasher",
        "a restart after exit code 3",
        |p: Option<&Pod>| {
            container_status(p).is_some_and(|c| {
                c.restart_count >= 1
                    && c.last_state
                        .as_ref()
                        .and_then(|s| s.terminated.as_ref())
                        .is_some_and(|t| t.exit_code == 3 && t.reason.as_deref() == Some("Error"))
            })
        },
    )
    .await;
    assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Running"));
    ns.delete().await;
}

#[tokio::test]
async fn failing_liveness_probe_restarts_the_container() {
    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    let port = free_port();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "unhealthy"},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "main",
                "image": PROBE_IMAGE,
                // /healthz answers 503 for an hour: the process runs but is never healthy.
                "env": [{"name": "PROBE_PORT", "value": port.to_string()}, {"name": "PROBE_READY_AFTER", "value": "3600"}],
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 1, "failureThreshold": 2},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 1},
            }],
        },
    }))
    .expect("pod");
    let pods = ns.api::<Pod>();
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    let pod = wait(
        pods,
        "unhealthy",
        "a liveness restart",
        |p: Option<&Pod>| container_status(p).is_some_and(|c| c.restart_count >= 1),
    )
    .await;
    let status = container_status(Some(&pod)).expect("status");
    assert!(
        !status.ready,
        "a container failing its readiness probe is not ready"
    );
    let last = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("last state");
    assert_eq!(
        last.exit_code, 0,
        "the probe process exits cleanly on SIGTERM"
    );
    ns.delete().await;
}

#[tokio::test]
async fn completed_pod_succeeds_and_failed_pod_fails() {
    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    for (name, code, phase) in [("done", "0", "Succeeded"), ("broken", "7", "Failed")] {
        let env = json!([
            {"name": "PROBE_PORT", "value": free_port().to_string()},
            {"name": "PROBE_EXIT_AFTER", "value": "0.1"},
            {"name": "PROBE_EXIT_CODE", "value": code},
        ]);
        let pods = bare_pod(&ns, name, PROBE_IMAGE, env, "Never").await;
        let pod = wait(pods, name, phase, move |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref())
                .and_then(|s| s.phase.as_deref())
                == Some(phase)
        })
        .await;
        let terminated = container_status(Some(&pod))
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.terminated.as_ref())
            .expect("terminated state");
        assert_eq!(terminated.exit_code.to_string(), code);
    }
    ns.delete().await;
}

#[tokio::test]
async fn unmapped_image_waits_with_an_image_pull_reason() {
    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    let pods = bare_pod(
        &ns,
        "unmapped",
        "logsub-test/not-mapped:1",
        json!([]),
        "Always",
    )
    .await;
    let pod = wait(
        pods,
        "unmapped",
        "an image pull waiting reason",
        |p: Option<&Pod>| {
            container_status(p)
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.waiting.as_ref())
                .is_some_and(|w| {
                    matches!(
                        w.reason.as_deref(),
                        Some("ErrImagePull" | "ImagePullBackOff")
                    )
                })
        },
    )
    .await;
    let waiting = container_status(Some(&pod))
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.waiting.clone())
        .expect("waiting");
    assert!(
        waiting
            .message
            .unwrap_or_default()
            .contains("is not mapped to a local executable")
    );
    assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    ns.delete().await;
}
