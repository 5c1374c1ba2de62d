//! logsub: a Kubernetes operator that sends CloudWatch Logs log groups through a
//! Kinesis data stream to Elasticsearch/OpenSearch or S3.

pub mod api;
pub mod aws;
pub mod cli;
pub mod retry;
pub mod telemetry;
pub mod time;
pub mod worker;
