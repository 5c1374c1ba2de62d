//! The LogSubscription API on the stack's real API server: the CRD is accepted and
//! Established, the examples are admitted, bad manifests are rejected with the
//! expected message, and `kubectl explain` shows the field docs.

mod common;

use std::time::Duration;

use common::{install_crd, stack};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use logsub::api::LogSubscription;
use serde_json::{Value, json};

const MANAGER: &str = "logsub-tests";

async fn ensure_namespace(client: &kube::Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    namespaces
        .patch(name, &PatchParams::apply(MANAGER), &Patch::Apply(&ns))
        .await
        .expect("apply namespace");
}

#[tokio::test]
async fn the_api_server_is_the_pinned_kubernetes() {
    let version = stack()
        .kube()
        .await
        .apiserver_version()
        .await
        .expect("version");
    assert_eq!(version.git_version, "v1.37.2");
}

#[tokio::test]
async fn crd_applies_and_becomes_established() {
    let client = stack().kube().await;
    install_crd(&client).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let crd = crds
        .get("logsubscriptions.logsub.io")
        .await
        .expect("get CRD");
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some(),
        "status subresource"
    );
    let columns: Vec<_> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    for want in ["Ready", "Sink", "Log groups", "Age"] {
        assert!(
            columns.contains(&want),
            "printer column {want} in {columns:?}"
        );
    }
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["lsub".to_owned()][..])
    );
}

#[tokio::test]
async fn every_example_is_accepted_by_server_side_apply() {
    let client = stack().kube().await;
    install_crd(&client).await;
    let examples = std::fs::read_dir(common::repo().join("examples")).expect("examples/");
    let mut applied = 0;
    for entry in examples {
        let path = entry.expect("entry").path();
        // LogSubscriptions only (examples/policies/ holds policies).
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read example");
        let lsub: LogSubscription = serde_saphyr::from_str(&text).expect("example parses");
        let namespace = lsub.metadata.namespace.clone().expect("namespace");
        let name = lsub.metadata.name.clone().expect("name");
        ensure_namespace(&client, &namespace).await;
        let api: Api<LogSubscription> = Api::namespaced(client.clone(), &namespace);
        let document: Value = serde_saphyr::from_str(&text).expect("example as JSON");
        // A dry run: admission and defaulting without leaving objects behind.
        let stored = api
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force().dry_run(),
                &Patch::Apply(&document),
            )
            .await
            .unwrap_or_else(|e| panic!("{} rejected: {e}", path.display()));
        // What the server stores reads back as the same spec, defaults included.
        assert_eq!(
            stored.spec,
            lsub.spec,
            "{} round-trips through the API server",
            path.display()
        );
        applied += 1;
    }
    assert!(applied >= 3);
}

#[tokio::test]
async fn invalid_manifests_are_rejected_at_admission() {
    let client = stack().kube().await;
    install_crd(&client).await;
    let api: Api<LogSubscription> = Api::namespaced(client, "default");
    let base = json!({
        "source": {"logGroups": {"names": ["/aws/vpc/flow"]}, "roleArn": "arn:aws:iam::123456789012:role/r"},
        "stream": {"existing": {"name": "s"}},
        "sink": {"elasticsearch": {"endpoint": "https://h:9200", "index": "cwl-%Y.%m.%d"}},
    });
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "no selector",
            json!({"source": {"logGroups": {}, "roleArn": "arn:aws:iam::123456789012:role/r"}}),
            "at least one of names, prefix or pattern must select log groups",
        ),
        (
            "two streams",
            json!({"stream": {"existing": {"name": "s"}, "managed": {"shardCount": 1}}}),
            "exactly one of existing or managed must be set",
        ),
        (
            "no stream",
            json!({"stream": {}}),
            "exactly one of existing or managed must be set",
        ),
        (
            "name and arn",
            json!({"stream": {"existing": {"name": "s", "arn": "arn:aws:kinesis:us-east-1:123456789012:stream/s"}}}),
            "exactly one of name or arn must be set",
        ),
        (
            "shards and on-demand",
            json!({"stream": {"managed": {"shardCount": 2, "onDemand": {}}}}),
            "exactly one of shardCount or onDemand must be set",
        ),
        (
            "zero shards",
            json!({"stream": {"managed": {"shardCount": 0}}}),
            "should be greater than or equal to 1",
        ),
        (
            "two sinks",
            json!({"sink": {"elasticsearch": {"endpoint": "https://h", "index": "a"}, "s3": {"bucket": "abc"}}}),
            "exactly one sink must be set: elasticsearch or s3",
        ),
        (
            "no sink",
            json!({"sink": {}}),
            "\"spec.sink\" must validate one and only one schema (oneOf). Found none valid",
        ),
        (
            "index and data stream",
            json!({"sink": {"elasticsearch": {"endpoint": "https://h", "index": "a", "dataStream": "b"}}}),
            "exactly one of index or dataStream must be set",
        ),
        (
            "two transforms in one item",
            json!({"transforms": [{"json": {}, "lambda": {}}]}),
            "each transform must name exactly one of json, vpcFlowLog, cloudTrail or lambda",
        ),
        (
            "bad role",
            json!({"source": {"logGroups": {"names": ["a"]}, "roleArn": "role/x"}}),
            "spec.source.roleArn",
        ),
        (
            "bad distribution",
            json!({"source": {"logGroups": {"names": ["a"]}, "roleArn": "arn:aws:iam::123456789012:role/r", "distribution": "ByShard"}}),
            "Unsupported value: \"ByShard\"",
        ),
        (
            "bad duration",
            json!({"source": {"logGroups": {"names": ["a"]}, "roleArn": "arn:aws:iam::123456789012:role/r", "rescanInterval": "5 minutes"}}),
            "spec.source.rescanInterval",
        ),
        (
            "bad compression",
            json!({"sink": {"s3": {"bucket": "abc", "compression": "bzip2"}}}),
            "Unsupported value: \"bzip2\"",
        ),
        (
            "bad bucket",
            json!({"sink": {"s3": {"bucket": "Not_A_Bucket"}}}),
            "spec.sink.s3.bucket",
        ),
        (
            "bad endpoint",
            json!({"sink": {"elasticsearch": {"endpoint": "search:9200", "index": "a"}}}),
            "spec.sink.elasticsearch.endpoint",
        ),
        (
            "bad byte size",
            json!({"workers": {"batch": {"maxBytes": "5MB"}}}),
            "spec.workers.batch.maxBytes",
        ),
        (
            "negative replicas",
            json!({"workers": {"replicas": -1}}),
            "spec.workers.replicas",
        ),
        (
            "bad deletion policy",
            json!({"deletionPolicy": "Orphan"}),
            "Unsupported value: \"Orphan\"",
        ),
        (
            "short retention",
            json!({"stream": {"managed": {"shardCount": 1, "retentionHours": 1}}}),
            "spec.stream.managed.retentionHours",
        ),
    ];
    for (what, patch, want) in cases {
        let mut spec = base.clone();
        for (k, v) in patch.as_object().expect("object") {
            spec[k] = v.clone();
        }
        let name = common::unique("bad");
        let object = json!({"apiVersion": "logsub.io/v1alpha1", "kind": "LogSubscription",
            "metadata": {"name": name}, "spec": spec});
        let err = api
            .patch(
                &name,
                &PatchParams::apply(MANAGER).dry_run(),
                &Patch::Apply(&object),
            )
            .await
            .expect_err(&format!("{what}: should be rejected"));
        let message = match &err {
            kube::Error::Api(status) => {
                assert_eq!(status.code, 422, "{what}: {err}");
                status.message.clone()
            }
            other => panic!("{what}: unexpected error {other}"),
        };
        assert!(
            message.contains(want),
            "{what}: message {message:?} lacks {want:?}"
        );
    }
}

#[tokio::test]
async fn kubectl_explain_shows_the_field_docs() {
    let client = stack().kube().await;
    install_crd(&client).await;
    // Discovery can trail the Established condition by a moment.
    let out = common::eventually("kubectl explain", Duration::from_secs(30), || async {
        let out = stack().kubectl(&["explain", "logsubscription.spec.sink"]);
        out.status.success().then_some(out)
    })
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "KIND:       LogSubscription",
        "Where the documents are delivered: exactly one of `elasticsearch` or `s3`.",
        "elasticsearch\t<Object>",
        "s3\t<Object>",
    ] {
        assert!(
            text.contains(want),
            "kubectl explain lacks {want:?}:\n{text}"
        );
    }
    let out = stack().kubectl(&["explain", "lsub.spec.source.rescanInterval"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("log groups created"), "{text}");
}
