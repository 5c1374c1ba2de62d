//! Command line: every flag also reads an environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// logsub streams CloudWatch Logs through Kinesis into Elasticsearch/OpenSearch or S3.
#[derive(Parser, Debug)]
#[command(name = "logsub", version, about)]
pub struct Cli {
    /// Log filter, in `tracing` env-filter syntax (e.g. `info,logsub=debug`).
    #[arg(long, env = "LOGSUB_LOG", default_value = "info", global = true)]
    pub log: String,

    /// Log format.
    #[arg(long, env = "LOGSUB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What to run.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the LogSubscription CustomResourceDefinition as YAML.
    Crd,
    /// Read a subscription's Kinesis stream and deliver its log events (what the
    /// worker pods run).
    Worker(WorkerArgs),
}

/// `logsub worker`.
#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The worker configuration file, as the controller renders it.
    #[arg(long, env = "LOGSUB_WORKER_CONFIG")]
    pub config: PathBuf,

    /// This worker's name on the leases it holds: the pod name in a cluster,
    /// else `<hostname>-<pid>`.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Address of the admin endpoints: `/metrics`, `/healthz`, `/readyz`.
    #[arg(long, env = "LOGSUB_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: std::net::SocketAddr,
}
