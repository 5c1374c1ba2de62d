//! The stack's secured Elasticsearch node, from the tests' side.

use serde_json::{Value, json};

use super::search::count_with;

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
        count_with(&self.admin, &self.base, index, |r| self.as_admin(r)).await
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
    /// `index` needs (not even the cluster's health): its id and its encoded
    /// form.
    pub async fn api_key(&self, index: &str) -> (String, String) {
        self.api_key_with(index, &["create_doc", "create_index"])
            .await
    }

    /// An API key with these privileges on `index` and none on the cluster.
    pub async fn api_key_with(&self, index: &str, privileges: &[&str]) -> (String, String) {
        let made: Value = self
            .as_admin(self.admin.post(format!("{}/_security/api_key", self.base)))
            .json(&json!({
                "name": format!("key-{index}"),
                "role_descriptors": {"writer": {
                    "cluster": [],
                    "indices": [{"names": [index], "privileges": privileges}],
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
