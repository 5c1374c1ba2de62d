//! Both search nodes answer `_bulk` `create` with `_id` as the sink relies on:
//! 201 for a new document, 409 for a replay, so replays never duplicate.

mod common;

use common::search::{count, create_index};
use common::{stack, unique};
use serde_json::{Value, json};

async fn bulk_create_is_idempotent(base: &str) {
    let http = reqwest::Client::new();
    let health: Value = http
        .get(format!("{base}/_cluster/health"))
        .send()
        .await
        .expect("cluster health")
        .json()
        .await
        .expect("health json");
    assert!(
        matches!(health["status"].as_str(), Some("green" | "yellow")),
        "{health}"
    );

    let index = unique("cwl").to_lowercase();
    create_index(base, &index, 1, json!({})).await;

    let ids = [
        "37981012345678901234567890123456789012345678901234567890",
        "37981012345678901234567890123456789012345678901234567891",
    ];
    let mut body = String::new();
    for (i, id) in ids.iter().enumerate() {
        body += &json!({"create": {"_index": index, "_id": id}}).to_string();
        body += "\n";
        body +=
            &json!({"@timestamp": "2026-11-25T19:44:28.711Z", "@message": format!("event {i}")})
                .to_string();
        body += "\n";
    }
    let send = || async {
        let resp = http
            .post(format!("{base}/_bulk?refresh=true"))
            .header("content-type", "application/x-ndjson")
            .body(body.clone())
            .send()
            .await
            .expect("bulk");
        assert_eq!(resp.status(), 200);
        resp.json::<Value>().await.expect("bulk json")
    };
    let statuses = |resp: &Value| -> Vec<i64> {
        resp["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| item["create"]["status"].as_i64().expect("status"))
            .collect()
    };

    let first = send().await;
    assert_eq!(first["errors"], false, "{first}");
    assert_eq!(statuses(&first), [201, 201]);

    let replay = send().await;
    assert_eq!(replay["errors"], true);
    assert_eq!(statuses(&replay), [409, 409]);
    for item in replay["items"].as_array().expect("items") {
        assert_eq!(
            item["create"]["error"]["type"],
            "version_conflict_engine_exception"
        );
    }

    assert_eq!(count(base, &index).await, 2, "the replay added nothing");
}

#[tokio::test]
async fn opensearch_bulk_create_then_conflict() {
    bulk_create_is_idempotent(stack().var("OPENSEARCH_URL")).await;
}

#[tokio::test]
async fn opensearch3_bulk_create_then_conflict() {
    bulk_create_is_idempotent(stack().var("OPENSEARCH3_URL")).await;
}

#[tokio::test]
async fn elasticsearch_bulk_create_then_conflict() {
    bulk_create_is_idempotent(stack().var("ELASTICSEARCH_URL")).await;
}

#[tokio::test]
async fn every_node_is_its_pinned_product() {
    let http = reqwest::Client::new();
    for (var, version) in [("OPENSEARCH_URL", "2.19.6"), ("OPENSEARCH3_URL", "3.8.0")] {
        let os: Value = http
            .get(stack().var(var))
            .send()
            .await
            .expect("GET /")
            .json()
            .await
            .expect("json");
        assert_eq!(os["version"]["distribution"], "opensearch", "{var}");
        assert_eq!(os["version"]["number"], version, "{var}");
    }
    let es = http
        .get(format!(
            "{}/_nodes/_local",
            stack().var("ELASTICSEARCH_URL")
        ))
        .send()
        .await
        .expect("nodes");
    assert_eq!(
        es.headers()
            .get("x-elastic-product")
            .and_then(|v| v.to_str().ok()),
        Some("Elasticsearch")
    );
    let es: Value = es.json().await.expect("json");
    let node = es["nodes"]
        .as_object()
        .and_then(|n| n.values().next())
        .expect("a node");
    assert_eq!(node["version"], "8.19.21");
}
