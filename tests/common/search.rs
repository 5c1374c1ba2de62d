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
    count_with(&reqwest::Client::new(), base, index, |r| r).await
}

/// [`count`] through `http`, each request made ready by `sign` (credentials).
pub async fn count_with(
    http: &reqwest::Client,
    base: &str,
    index: &str,
    sign: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> u64 {
    let _ = sign(http.post(format!("{base}/{index}/_refresh?ignore_unavailable=true")))
        .send()
        .await;
    let counted: Value = sign(http.get(format!("{base}/{index}/_count?ignore_unavailable=true")))
        .send()
        .await
        .expect("count")
        .json()
        .await
        .expect("count json");
    counted["count"].as_u64().unwrap_or(0)
}
