//! logsub: a Kubernetes operator that sends CloudWatch Logs log groups through a
//! Kinesis data stream to Elasticsearch/OpenSearch or S3.

pub mod api;
pub mod aws;
pub mod cli;
pub mod contract;
pub mod controller;
pub mod retry;
pub mod telemetry;
pub mod time;
pub mod worker;

/// Chooses the process's TLS crypto provider. Two are linked (aws-lc-rs for the
/// Kubernetes and AWS clients, ring through the search client's HTTP stack), so
/// rustls cannot pick one by itself. Call before making any client; calling
/// again does nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
