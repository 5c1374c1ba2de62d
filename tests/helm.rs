//! The Helm chart (`charts/logsub`), rendered with the stack's helm: lint-clean,
//! its CRD the generated one, its ClusterRole what the controller calls, its
//! output pinned by golden files, and bad values refused with a clear message.
//! `LOGSUB_UPDATE_GOLDEN=1` rewrites the golden files.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{repo, stack};
use k8s_openapi::api::rbac::v1::ClusterRole;
use serde::Deserialize;

fn chart() -> PathBuf {
    repo().join("charts/logsub")
}

fn helm(args: &[&str]) -> std::process::Output {
    Command::new(stack().tool("helm"))
        .args(args)
        .output()
        .expect("run helm")
}

fn template(values: Option<&str>, sets: &[&str]) -> Result<String, String> {
    let chart = chart();
    let mut args = vec![
        "template",
        "logsub",
        chart.to_str().unwrap(),
        "--namespace",
        "logsub-system",
    ];
    let values_path = values.map(|v| repo().join(v));
    if let Some(path) = &values_path {
        args.extend(["--values", path.to_str().unwrap()]);
    }
    for set in sets {
        args.extend(["--set", set]);
    }
    let out = helm(&args);
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("utf-8"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn documents(yaml: &str) -> Vec<serde_json::Value> {
    serde_saphyr::from_multiple::<serde_json::Value>(yaml)
        .expect("helm renders YAML")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

#[test]
fn the_chart_lints_clean() {
    let out = helm(&["lint", "--strict", chart().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_chart_crd_is_the_generated_crd() {
    let generated = logsub::api::crd_yaml();
    for path in [
        "crds/logsubscription.yaml",
        "charts/logsub/crds/logsubscription.yaml",
    ] {
        let file = std::fs::read_to_string(repo().join(path)).expect(path);
        assert!(file == generated, "{path} is stale: run `make crd`");
    }
}

#[test]
fn the_cluster_role_grants_what_the_controller_calls() {
    let rendered = documents(&template(None, &[]).expect("default values render"));
    let role = rendered
        .into_iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    let role = ClusterRole::deserialize(role).expect("a ClusterRole");
    assert_eq!(
        role.rules,
        logsub::controller::resources::rbac::cluster_role().rules,
        "the chart's rules are `logsub rbac`'s"
    );
}

#[test]
fn rendering_matches_the_golden_files() {
    for (values, golden) in [
        (None, "tests/helm/golden-default.yaml"),
        (
            Some("tests/helm/full-values.yaml"),
            "tests/helm/golden-full.yaml",
        ),
    ] {
        let rendered = template(values, &[]).unwrap_or_else(|e| panic!("{values:?}: {e}"));
        let path = repo().join(golden);
        if std::env::var_os("LOGSUB_UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &rendered).expect("write golden");
        }
        let want = std::fs::read_to_string(&path).expect(golden);
        assert!(
            rendered == want,
            "{golden} differs from `helm template`; if the change is meant, run with LOGSUB_UPDATE_GOLDEN=1 and review the diff"
        );
    }
}

#[test]
fn every_rendered_object_names_its_kind_and_version() {
    for values in [None, Some("tests/helm/full-values.yaml")] {
        for doc in documents(&template(values, &[]).expect("renders")) {
            assert!(
                doc["apiVersion"].is_string() && doc["kind"].is_string(),
                "{values:?}: {doc}"
            );
        }
    }
}

#[test]
fn leader_election_follows_the_replica_count() {
    let args = |sets: &[&str]| -> Vec<String> {
        let rendered = documents(&template(None, sets).expect("renders"));
        let deployment = rendered
            .into_iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("a Deployment");
        serde_json::from_value(
            deployment["spec"]["template"]["spec"]["containers"][0]["args"].clone(),
        )
        .expect("args")
    };
    assert!(args(&[]).contains(&"--leader-election=false".to_owned()));
    assert!(args(&["replicaCount=3"]).contains(&"--leader-election=true".to_owned()));
}

#[test]
fn bad_values_are_refused_with_the_field_named() {
    for (set, names) in [
        ("replicaCount=-1", "/replicaCount"),
        (
            "controller.resyncPeriod=5 minutes",
            "/controller/resyncPeriod",
        ),
        ("controller.logFormat=xml", "/controller/logFormat"),
        ("image.digest=latest", "/image/digest"),
        ("image.repositry=logsub", "repositry"),
    ] {
        let error = template(None, &[set]).expect_err(set);
        assert!(error.contains(names), "{set}: {error}");
    }
}

/// `helm install` on the stack: the controller Pod runs on the local node and
/// a LogSubscription becomes Ready with documents in OpenSearch; `helm upgrade`
/// with a changed value rolls the controller; with the LogSubscription deleted
/// first (and cleaned up by the controller), `helm uninstall` leaves no
/// controller objects behind.
#[tokio::test]
async fn the_chart_installs_upgrades_and_uninstalls_on_the_stack() {
    use common::controller::{aws_secret, condition, create, delete_all, wait_for};
    use common::pipeline::free_port;
    use common::{TestNamespace, eventually, unique};
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    use std::time::Duration;

    let client = stack().kube().await;
    common::install_crd(&client).await;
    let watched = TestNamespace::new(&client).await;
    let home = TestNamespace::new(&client).await;
    let env = aws_secret(&watched).await;
    // The controller reads its AWS credentials from the same Secret's keys.
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "aws"},
        "stringData": {
            "AWS_ACCESS_KEY_ID": stack().var("AWS_ACCESS_KEY_ID"),
            "AWS_SECRET_ACCESS_KEY": stack().var("AWS_SECRET_ACCESS_KEY"),
        },
    }))
    .unwrap();
    home.api::<k8s_openapi::api::core::v1::Secret>()
        .create(&Default::default(), &secret)
        .await
        .unwrap();
    // Named so that the chart's full name is the release name.
    let release = unique("logsub");
    let kubeconfig = stack().kubeconfig();
    let values = serde_json::json!({
        "image": {"repository": "logsub", "tag": "dev"},
        "controller": {
            "region": stack().var("AWS_REGION"),
            "awsEndpointUrl": stack().var("AWS_ENDPOINT_URL_KINESIS"),
            "watchNamespace": watched.name,
            "statusInterval": "2s",
            "workerAdminAddr": format!("127.0.0.1:{}", free_port()),
            "extraEnv": env,
        },
        "metrics": {"port": free_port(), "bindAddress": "127.0.0.1"},
    });
    let values_file = std::env::temp_dir().join(format!("{release}-values.json"));
    std::fs::write(&values_file, values.to_string()).unwrap();
    let helm_at = |args: &[&str]| {
        let out = Command::new(stack().tool("helm"))
            .args(args)
            .args([
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "--namespace",
                &home.name,
            ])
            .output()
            .expect("run helm");
        assert!(
            out.status.success(),
            "helm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let chart = chart();
    helm_at(&[
        "install",
        &release,
        chart.to_str().unwrap(),
        "--values",
        values_file.to_str().unwrap(),
        "--wait",
        "--timeout",
        "120s",
    ]);

    // A LogSubscription delivers through the installed controller.
    let aws = stack().aws().await;
    let logs = aws_sdk_cloudwatchlogs::Client::new(&aws);
    let (stream, _) = common::active_stream(&aws_sdk_kinesis::Client::new(&aws), "helm", 1).await;
    let group = format!("/{}", unique("helm"));
    logs.create_log_group()
        .log_group_name(&group)
        .send()
        .await
        .unwrap();
    logs.create_log_stream()
        .log_group_name(&group)
        .log_stream_name("s")
        .send()
        .await
        .unwrap();
    let index = unique("helm");
    create(
        &watched,
        serde_json::json!({
            "apiVersion": "logsub.io/v1alpha1",
            "kind": "LogSubscription",
            "metadata": {"name": "app"},
            "spec": {
                "source": {"logGroups": {"names": [group]}, "roleArn": "arn:aws:iam::123456789012:role/CWLtoKinesis"},
                "stream": {"existing": {"name": stream}},
                "sink": {"elasticsearch": {"endpoint": stack().var("OPENSEARCH_URL"), "index": index}},
                "workers": {"env": env, "batch": {"maxWait": "200ms"}},
            }
        }),
    )
    .await;
    wait_for(&watched, "app", "Ready", Duration::from_secs(180), |l| {
        (condition(l, "Ready")?.0 == "True").then_some(())
    })
    .await;
    let now = logsub::time::now_millis();
    let events: Vec<_> = (0..10)
        .map(|i| {
            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                .timestamp(now + i)
                .message(format!("event {i}"))
                .build()
                .unwrap()
        })
        .collect();
    logs.put_log_events()
        .log_group_name(&group)
        .log_stream_name("s")
        .set_log_events(Some(events))
        .send()
        .await
        .unwrap();
    let base = stack().var("OPENSEARCH_URL");
    eventually(
        "10 documents in OpenSearch",
        Duration::from_secs(120),
        || async { (common::search::count(base, &index).await == 10).then_some(()) },
    )
    .await;

    // An upgrade with a changed value rolls the controller.
    let deployments = home.api::<Deployment>();
    let template_of = |d: &Deployment| serde_json::to_value(&d.spec.template).unwrap();
    let before = template_of(&deployments.get(&release).await.unwrap());
    helm_at(&[
        "upgrade",
        &release,
        chart.to_str().unwrap(),
        "--values",
        values_file.to_str().unwrap(),
        "--set",
        "controller.resyncPeriod=2m",
        "--wait",
        "--timeout",
        "120s",
    ]);
    let after = deployments.get(&release).await.unwrap();
    assert_ne!(template_of(&after), before, "the pod template changed");
    let status = after.status.unwrap_or_default();
    assert_eq!(
        (status.updated_replicas, status.available_replicas),
        (Some(1), Some(1)),
        "the new controller is the one running"
    );

    // Delete the LogSubscription first: the installed controller cleans up AWS.
    delete_all(&watched).await;
    helm_at(&["uninstall", &release, "--wait", "--timeout", "120s"]);
    assert!(deployments.get_opt(&release).await.unwrap().is_none());
    let cluster_roles: kube::Api<ClusterRole> = kube::Api::all(client.clone());
    assert!(cluster_roles.get_opt(&release).await.unwrap().is_none());
    let bindings: kube::Api<ClusterRoleBinding> = kube::Api::all(client.clone());
    assert!(bindings.get_opt(&release).await.unwrap().is_none());
    assert!(
        home.api::<k8s_openapi::api::core::v1::ServiceAccount>()
            .get_opt(&release)
            .await
            .unwrap()
            .is_none()
    );
    // CRDs stay, as Helm leaves them.
    let crds: kube::Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = kube::Api::all(client);
    assert!(
        crds.get_opt("logsubscriptions.logsub.io")
            .await
            .unwrap()
            .is_some()
    );
    watched.delete().await;
    home.delete().await;
}
