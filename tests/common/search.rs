//! The stack's search nodes, from the tests' side.

use serde_json::{Value, json};

/// Creates `index` on `base` with these shards and mappings, no replicas (one node).
pub async fn create_index(base: &str, index: &str, shards: u32, mappings: Value) {
    let created = reqwest::Client::new()
        .put(format!("{base}/{index}"))
        .json(&json!({
            "settings": {"number_of_shards": shards, "number_of_replicas": 0},
            "mappings": mappings,
        }))
        .send()
        .await
        .expect("create index");
    let status = created.status();
    assert!(
        status.is_success(),
        "create {index}: {status} {}",
        created.text().await.unwrap_or_default()
    );
}

/// The documents in `index` (0 when there is no such index), after a refresh.
pub async fn count(base: &str, index: &str) -> u64 {
    count_as(base, index, None).await
}

/// [`count`], signed in as `user` (name, password) on a secured cluster.
pub async fn count_as(base: &str, index: &str, user: Option<(&str, &str)>) -> u64 {
    let http = reqwest::Client::new();
    let request = |r: reqwest::RequestBuilder| match user {
        Some((name, password)) => r.basic_auth(name, Some(password)),
        None => r,
    };
    let _ = request(http.post(format!("{base}/{index}/_refresh?ignore_unavailable=true")))
        .send()
        .await;
    let counted: Value =
        request(http.get(format!("{base}/{index}/_count?ignore_unavailable=true")))
            .send()
            .await
            .expect("count")
            .json()
            .await
            .expect("count json");
    counted["count"].as_u64().unwrap_or(0)
}
