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
    let http = reqwest::Client::new();
    let _ = http
        .post(format!("{base}/{index}/_refresh?ignore_unavailable=true"))
        .send()
        .await;
    let counted: Value = http
        .get(format!("{base}/{index}/_count?ignore_unavailable=true"))
        .send()
        .await
        .expect("count")
        .json()
        .await
        .expect("count json");
    counted["count"].as_u64().unwrap_or(0)
}

/// The stack's secured Elasticsearch node (HTTPS, security on), started for
/// the tests that use it and stopped when the last of them is done with it:
/// it is one more JVM, kept only while needed.
pub struct SecureNode {
    pub base: String,
    admin: reqwest::Client,
}

static SECURE_USERS: std::sync::Mutex<usize> = std::sync::Mutex::new(0);

impl SecureNode {
    pub async fn acquire() -> SecureNode {
        {
            let mut users = SECURE_USERS.lock().unwrap_or_else(|e| e.into_inner());
            if *users == 0 {
                super::stack_sh(&["secure-search", "start"]);
            }
            *users += 1;
        }
        SecureNode {
            base: super::stack().var("SECURE_SEARCH_URL").to_owned(),
            admin: Self::client(),
        }
    }

    /// A client that trusts the node's CA.
    pub fn client() -> reqwest::Client {
        let pem = std::fs::read(super::stack().var("SECURE_SEARCH_CA")).expect("the node's CA");
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("a PEM CA"))
            .build()
            .expect("client")
    }

    fn as_admin(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.basic_auth(
            "elastic",
            Some(super::stack().var("SECURE_SEARCH_PASSWORD")),
        )
    }

    /// The documents in `index`, counted as the superuser.
    pub async fn count(&self, index: &str) -> u64 {
        let base = &self.base;
        let _ = self
            .as_admin(
                self.admin
                    .post(format!("{base}/{index}/_refresh?ignore_unavailable=true")),
            )
            .send()
            .await;
        let counted: Value = self
            .as_admin(
                self.admin
                    .get(format!("{base}/{index}/_count?ignore_unavailable=true")),
            )
            .send()
            .await
            .expect("count")
            .json()
            .await
            .expect("count json");
        counted["count"].as_u64().unwrap_or(0)
    }

    /// Waits until `index` holds `n` documents, and checks that it holds no more.
    pub async fn wait_count(&self, index: &str, n: u64) {
        super::eventually(
            &format!("{n} documents in {index}"),
            std::time::Duration::from_secs(120),
            || async { (self.count(index).await >= n).then_some(()) },
        )
        .await;
        assert_eq!(self.count(index).await, n, "each event once in {index}");
    }

    /// An API key made through the security API with only what a writer of
    /// `index` needs: its id and its encoded form.
    pub async fn api_key(&self, index: &str) -> (String, String) {
        let made: Value = self
            .as_admin(self.admin.post(format!("{}/_security/api_key", self.base)))
            .json(&json!({
                "name": format!("writer-{index}"),
                "role_descriptors": {"writer": {
                    "cluster": ["monitor"],
                    "indices": [{"names": [index], "privileges": ["create_doc", "create_index"]}],
                }},
            }))
            .send()
            .await
            .expect("create an API key")
            .json()
            .await
            .expect("API key json");
        match (made["id"].as_str(), made["encoded"].as_str()) {
            (Some(id), Some(encoded)) => (id.to_owned(), encoded.to_owned()),
            _ => panic!("no API key: {made}"),
        }
    }

    /// Revokes the API key `id`.
    pub async fn invalidate(&self, id: &str) {
        let answer: Value = self
            .as_admin(
                self.admin
                    .delete(format!("{}/_security/api_key", self.base)),
            )
            .json(&json!({"ids": [id]}))
            .send()
            .await
            .expect("invalidate an API key")
            .json()
            .await
            .expect("json");
        assert_eq!(answer["invalidated_api_keys"], json!([id]), "{answer}");
    }
}

impl Drop for SecureNode {
    fn drop(&mut self) {
        let mut users = SECURE_USERS.lock().unwrap_or_else(|e| e.into_inner());
        *users -= 1;
        if *users == 0 {
            // Not asserted: a failing test unwinds through here.
            let _ = std::process::Command::new(super::repo().join("hack/stack.sh"))
                .args(["secure-search", "stop"])
                .status();
        }
    }
}
