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
    /// Print the CustomResourceDefinitions (LogSubscription, LogSubscriptionPolicy) as YAML.
    Crd {
        /// Write each CRD to its own file in this directory instead.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Print the ClusterRoles of the controller and its workers as YAML.
    Rbac,
    /// Reconcile LogSubscriptions: subscription filters, streams, workers, status.
    Controller(Box<ControllerArgs>),
    /// Read a subscription's Kinesis stream and deliver its log events (what the
    /// worker pods run).
    Worker(WorkerArgs),
}

/// `logsub controller`.
#[derive(Args, Debug)]
pub struct ControllerArgs {
    /// The image the worker pods run: the controller's own.
    #[arg(long, env = "LOGSUB_WORKER_IMAGE")]
    pub worker_image: String,

    /// Where the workers serve `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "LOGSUB_WORKER_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub worker_admin_addr: std::net::SocketAddr,

    /// AWS region of LogSubscriptions that name none; the default chain's when unset.
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,

    /// Endpoint of a Kinesis and CloudWatch Logs compatible API (also given to
    /// the workers as `AWS_ENDPOINT_URL_KINESIS`).
    #[arg(long, env = "LOGSUB_AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,

    /// How often an unchanged LogSubscription's AWS resources are checked again
    /// (one describe per resource), e.g. `5m`.
    #[arg(long, env = "LOGSUB_RESYNC_PERIOD", default_value = "5m", value_parser = duration)]
    pub resync_period: std::time::Duration,

    /// How often the status is refreshed from the workers' delivery health.
    #[arg(long, env = "LOGSUB_STATUS_INTERVAL", default_value = "30s", value_parser = duration)]
    pub status_interval: std::time::Duration,

    /// Address of the admin endpoints: `/metrics`, `/healthz`, `/readyz`.
    #[arg(long, env = "LOGSUB_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: std::net::SocketAddr,

    /// Watch only this namespace (bind the ClusterRole there with a
    /// RoleBinding); every namespace when unset.
    #[arg(long, env = "LOGSUB_WATCH_NAMESPACE")]
    pub namespace: Option<String>,

    /// Reconcile only the LogSubscriptions with these labels (a label
    /// selector, e.g. `logsub.io/instance=team-a`), so that several
    /// controllers can share a cluster, each with its own; all when unset.
    /// A LogSubscription relabelled out of it is left as it is, not cleaned up.
    #[arg(long, env = "LOGSUB_SELECTOR")]
    pub selector: Option<String>,

    /// How long a running LogSubscription that no policy selects any more
    /// keeps its filters and workers (a policy deleted and applied again,
    /// as GitOps may replace one, must not stop delivery in between).
    #[arg(long, env = "LOGSUB_WITHDRAW_GRACE", default_value = "30s", value_parser = duration)]
    pub withdraw_grace: std::time::Duration,

    /// How many LogSubscriptions are reconciled at once. Bounded so that a
    /// burst (thousands created at once, a policy change) cannot queue the
    /// leader's Lease renewal behind the controller's own requests at the
    /// API server, where they share one flow.
    #[arg(long, env = "LOGSUB_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// The ClusterRole bound to the workers: the one the controller may `bind`.
    #[arg(long, env = "LOGSUB_WORKER_ROLE", default_value = "logsub-worker")]
    pub worker_role: String,

    /// Elect a leader through a Lease, so several replicas are safe (one reconciles).
    #[arg(long, env = "LOGSUB_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Namespace of the leader Lease: the controller's own.
    #[arg(long, env = "POD_NAMESPACE", default_value = "logsub-system")]
    pub leader_election_namespace: String,

    /// Name of the leader Lease. Installs that share a namespace (each with
    /// its own `--selector`) need one each, or only one of them leads.
    #[arg(
        long,
        env = "LOGSUB_LEADER_ELECTION_ID",
        default_value = "logsub-controller"
    )]
    pub leader_election_id: String,

    /// How long the leader Lease lasts unrenewed.
    #[arg(long, env = "LOGSUB_LEASE_DURATION", default_value = "15s", value_parser = duration)]
    pub lease_duration: std::time::Duration,

    /// This replica's name on the leader Lease and on Events: the pod name in a
    /// cluster, else `<hostname>-<pid>`.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

/// A Go-style duration (`90s`, `5m`, `1h30m`), as the CRD's durations.
fn duration(s: &str) -> Result<std::time::Duration, String> {
    s.parse::<kube::core::Duration>()
        .map(Into::into)
        .map_err(|e| format!("{s:?}: {e}"))
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
