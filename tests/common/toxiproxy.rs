//! Toxiproxy, the stack's TCP fault proxy (`hack/stack.sh` starts it): a test
//! puts a proxy in front of a real server and adds toxics (latency, a
//! bandwidth cap, a stall, connections cut after some bytes) while it runs.

use serde_json::{Value, json};

use super::{stack, unique};

/// A proxy in front of one server, deleted when dropped.
pub struct Proxy {
    name: String,
    /// Where clients connect: `127.0.0.1:<port>`.
    pub listen: String,
}

fn api(path: &str) -> String {
    format!("{}{path}", stack().var("TOXIPROXY_URL"))
}

impl Proxy {
    /// A proxy to `upstream` (`host:port`) on a port of its own.
    pub async fn new(upstream: &str) -> Proxy {
        let name = unique("proxy");
        let created: Value = reqwest::Client::new()
            .post(api("/proxies"))
            .json(&json!({"name": name, "listen": "127.0.0.1:0", "upstream": upstream}))
            .send()
            .await
            .expect("create a proxy")
            .error_for_status()
            .expect("proxy created")
            .json()
            .await
            .expect("proxy JSON");
        let listen = created["listen"].as_str().expect("listen").to_owned();
        assert!(listen.starts_with("127.0.0.1:"), "{listen}");
        Proxy { name, listen }
    }

    /// A proxy to the server of `url` (`http://127.0.0.1:9200`).
    pub async fn to_url(url: &str) -> Proxy {
        let url = url::Url::parse(url).expect("url");
        let upstream = format!(
            "{}:{}",
            url.host_str().expect("host"),
            url.port_or_known_default().expect("port")
        );
        Proxy::new(&upstream).await
    }

    /// The proxy as an `http://` URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// Adds a toxic: `kind` (`latency`, `bandwidth`, `timeout`, `limit_data`,
    /// `reset_peer`, …) on the `downstream` (answers) or `upstream` (requests)
    /// side, with its attributes. Returns its name.
    pub async fn toxic(&self, kind: &str, stream: &str, attributes: Value) -> String {
        let name = format!("{kind}-{stream}");
        reqwest::Client::new()
            .post(api(&format!("/proxies/{}/toxics", self.name)))
            .json(&json!({"name": name, "type": kind, "stream": stream, "toxicity": 1.0, "attributes": attributes}))
            .send()
            .await
            .expect("add a toxic")
            .error_for_status()
            .expect("toxic added");
        name
    }

    /// Removes a toxic.
    pub async fn heal(&self, toxic: &str) {
        reqwest::Client::new()
            .delete(api(&format!("/proxies/{}/toxics/{toxic}", self.name)))
            .send()
            .await
            .expect("remove a toxic")
            .error_for_status()
            .expect("toxic removed");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Blocking on purpose: drop cannot wait on the runtime.
        let url = api(&format!("/proxies/{}", self.name));
        let _ = std::thread::spawn(move || {
            let _ = std::process::Command::new("curl")
                .args(["-sf", "-X", "DELETE", &url])
                .status();
        })
        .join();
    }
}
