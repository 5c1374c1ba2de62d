//! Metrics and the admin server (`/metrics`, `/healthz`, `/readyz`): one
//! prometheus-client registry per process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-shard series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabels {
    /// The shard id.
    pub shard: String,
}

/// Labels of a blocked shard: the shard and the record it stopped at.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BlockedLabels {
    /// The shard id.
    pub shard: String,
    /// The sequence number of the record nothing would store.
    pub sequence: String,
}

/// Labels of error series: a stable category, never `Debug` text.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The error category.
    pub error_type: String,
    /// Where it happened: `processing` (decoding a record) or `sending` (a delivery).
    pub stage: String,
}

impl ErrorLabels {
    /// An error of `error_type` while decoding a record.
    pub fn processing(error_type: &str) -> ErrorLabels {
        ErrorLabels {
            error_type: error_type.to_owned(),
            stage: "processing".to_owned(),
        }
    }

    /// An error of `error_type` while delivering.
    pub fn sending(error_type: &str) -> ErrorLabels {
        ErrorLabels {
            error_type: error_type.to_owned(),
            stage: "sending".to_owned(),
        }
    }
}

/// Labels of failed deliveries.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkErrorLabels {
    /// The failure's category (`throttled`, `unavailable`, `denied`, …).
    pub error_type: String,
}

/// The worker's metrics.
pub struct WorkerMetrics {
    /// Kinesis records read, per shard.
    pub records_read: Family<ShardLabels, Counter>,
    /// Kinesis record bytes read, per shard.
    pub bytes_read: Family<ShardLabels, Counter>,
    /// How far each shard's reader is behind the stream's tip.
    pub millis_behind_latest: Family<ShardLabels, Gauge>,
    /// Log events decoded into documents.
    pub events_decoded: Counter,
    /// CloudWatch Logs control messages skipped.
    pub control_messages: Counter,
    /// Errors by type and stage: records that could not be decoded (and went
    /// to the dead letter), deliveries that failed (and are retried).
    pub errors: Family<ErrorLabels, Counter>,
    /// Documents delivered.
    pub sent_events: Counter,
    /// Encoded bytes delivered.
    pub sent_bytes: Counter,
    /// How long sink requests take, in seconds.
    pub sink_request_seconds: Histogram,
    /// Delivery requests made to the sink.
    pub sink_requests: Counter,
    /// Documents the sink refused for now and that were sent again.
    pub sink_retried_events: Counter,
    /// Documents the sink refused for good, written to the dead letter.
    pub sink_dead_lettered_events: Counter,
    /// Documents the sink refused for good whose dead letter was refused
    /// too: stored nowhere, they stop their shard.
    pub sink_failed_events: Counter,
    /// Documents not delivered because their shard's task had gone (its lease
    /// went to another worker, which reads them again).
    pub abandoned_events: Counter,
    /// 1 for each shard stopped at a record nothing would store.
    pub blocked_shards: Family<BlockedLabels, Gauge>,
    /// Failed deliveries, by error type (each is retried).
    pub sink_errors: Family<SinkErrorLabels, Counter>,
    /// Unix time of each shard's last checkpoint write (checkpoint age = now - this).
    pub checkpoint_time: Family<ShardLabels, Gauge>,
    /// Shard leases this worker holds.
    pub leases_held: Gauge,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        WorkerMetrics {
            records_read: Family::default(),
            bytes_read: Family::default(),
            millis_behind_latest: Family::default(),
            events_decoded: Counter::default(),
            control_messages: Counter::default(),
            errors: Family::default(),
            sent_events: Counter::default(),
            sent_bytes: Counter::default(),
            // 1 ms to about 33 s.
            sink_request_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            sink_requests: Counter::default(),
            sink_retried_events: Counter::default(),
            sink_dead_lettered_events: Counter::default(),
            sink_failed_events: Counter::default(),
            abandoned_events: Counter::default(),
            blocked_shards: Family::default(),
            sink_errors: Family::default(),
            checkpoint_time: Family::default(),
            leases_held: Gauge::default(),
        }
    }
}

impl WorkerMetrics {
    /// Registers every series in `registry`.
    pub fn register(self: &Arc<Self>, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("logsub_worker");
        r.register(
            "records_read",
            "Kinesis records read",
            self.records_read.clone(),
        );
        r.register(
            "bytes_read",
            "Kinesis record bytes read",
            self.bytes_read.clone(),
        );
        r.register(
            "millis_behind_latest",
            "How far the reader is behind the stream's tip",
            self.millis_behind_latest.clone(),
        );
        r.register(
            "checkpoint_time_seconds",
            "Unix time of the last checkpoint write",
            self.checkpoint_time.clone(),
        );
        r.register("leases_held", "Shard leases held", self.leases_held.clone());
        r.register(
            "sink_request_seconds",
            "How long sink requests take",
            self.sink_request_seconds.clone(),
        );
        r.register(
            "sink_requests",
            "Delivery requests made to the sink",
            self.sink_requests.clone(),
        );
        r.register(
            "sink_retried_events",
            "Documents the sink refused for now and that were sent again",
            self.sink_retried_events.clone(),
        );
        r.register(
            "sink_dead_lettered_events",
            "Documents the sink refused for good, written to the dead letter",
            self.sink_dead_lettered_events.clone(),
        );
        r.register(
            "sink_failed_events",
            "Documents the sink refused for good whose dead letter was refused too; their shards stop",
            self.sink_failed_events.clone(),
        );
        r.register(
            "abandoned_events",
            "Documents not delivered because their shard's lease went to another worker",
            self.abandoned_events.clone(),
        );
        r.register(
            "blocked_shards",
            "1 while a shard is stopped at a record that nothing would store",
            self.blocked_shards.clone(),
        );
        r.register(
            "sink_errors",
            "Failed deliveries, by error type; each is retried",
            self.sink_errors.clone(),
        );
        registry.register(
            "component_received_events",
            "Log events decoded",
            self.events_decoded.clone(),
        );
        registry.register(
            "component_discarded_events",
            "Control messages skipped",
            self.control_messages.clone(),
        );
        registry.register(
            "component_errors",
            "Errors: records dead-lettered while processing, deliveries failed while sending",
            self.errors.clone(),
        );
        registry.register(
            "component_sent_events",
            "Documents delivered",
            self.sent_events.clone(),
        );
        registry.register(
            "component_sent_bytes",
            "Encoded bytes delivered",
            self.sent_bytes.clone(),
        );
    }

    /// Shard labels.
    pub fn shard(shard: &str) -> ShardLabels {
        ShardLabels {
            shard: shard.to_owned(),
        }
    }
}

/// Whether the process is ready (for `/readyz`).
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the process ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }
}

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    ready: Readiness,
}

/// Serves the admin endpoints on `addr` until the process ends.
pub async fn serve(
    addr: SocketAddr,
    registry: Registry,
    ready: Readiness,
) -> std::io::Result<SocketAddr> {
    let state = AdminState {
        registry: Arc::new(registry),
        ready,
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin server stopped");
        }
    });
    Ok(bound)
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.ready.0.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Labels of reconcile outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `apply` or `cleanup`.
    pub phase: String,
    /// `ok` or `error`.
    pub result: String,
}

/// Labels of controller errors.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabels {
    /// The error's stable category.
    pub error_type: String,
}

/// Labels of AWS calls.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AwsCallLabels {
    /// The service, e.g. `Kinesis`.
    pub service: String,
    /// The operation, e.g. `DescribeStreamSummary`.
    pub operation: String,
    /// `success`, `throttled`, `error` or `transport_error`.
    pub outcome: String,
}

/// The controller's metrics.
pub struct ControllerMetrics {
    /// Reconciles, by phase and result.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Failed reconciles and failed steps within them, by category.
    pub errors: Family<CategoryLabels, Counter>,
    /// How long reconciles take, in seconds.
    pub reconcile_seconds: Histogram,
    /// Every AWS request attempt, by service, operation and outcome.
    pub aws_calls: Family<AwsCallLabels, Counter>,
    /// 1 while this replica leads.
    pub leader: Gauge,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        ControllerMetrics {
            reconciles: Family::default(),
            errors: Family::default(),
            // 1 ms to about 65 s.
            reconcile_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            aws_calls: Family::default(),
            leader: Gauge::default(),
        }
    }
}

impl ControllerMetrics {
    /// Registers every series in `registry`.
    pub fn register(self: &Arc<Self>, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("logsub_controller");
        r.register(
            "reconciles",
            "Reconciles, by phase and result",
            self.reconciles.clone(),
        );
        r.register(
            "errors",
            "Failed reconciles and failed steps, by category",
            self.errors.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "How long reconciles take",
            self.reconcile_seconds.clone(),
        );
        r.register(
            "aws_calls",
            "AWS request attempts, by service, operation and outcome",
            self.aws_calls.clone(),
        );
        r.register("leader", "1 while this replica leads", self.leader.clone());
    }

    /// Counts an error of `category`.
    pub fn error(&self, category: &str) {
        self.errors
            .get_or_create(&CategoryLabels {
                error_type: category.to_owned(),
            })
            .inc();
    }
}
