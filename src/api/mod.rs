//! The `LogSubscription` and `LogSubscriptionPolicy` API (`logsub.io/v1alpha1`).
//!
//! Doc comments on every field become `kubectl explain` text. What the schema can
//! check (formats, enums, bounds, exclusivity through CEL) is checked at admission;
//! [`validate`](LogSubscriptionSpec::validate) covers the rest.

mod crd;
mod policy;
mod sink;
mod source;
mod status;
mod stream;
mod template;
mod transform;
mod validate;
mod workers;

pub use crd::{crd, crd_files, crd_yaml, policy_crd};
pub use policy::{
    ElasticsearchRule, LogGroupRules, LogSubscriptionPolicy, LogSubscriptionPolicySpec,
    ManagedStreamRule, NamespaceSelection, RoleRules, S3Rule, SinkRules, StreamRules,
};
pub use sink::{
    ApiKeyAuth, AwsSigV4Auth, BasicAuth, Compression, DeadLetter, ElasticsearchAuth,
    ElasticsearchSink, ElasticsearchTarget, IndexTemplateSpec, S3Sink, SecretKeyRef, SecretRef,
    SigV4Service, Sink, StorageClass, TlsSpec,
};
pub(crate) use source::glob_matches;
pub use source::{Distribution, LogGroupSelector, SourceSpec};
pub use status::{
    Condition, DeliveryStatus, FilterState, LogGroupStatus, LogSubscriptionStatus, WorkersStatus,
};
pub use stream::{ExistingStream, ManagedStream, OnDemand, StreamRef, StreamSpec};
pub use template::{Template, TemplateError, UtcHour};
pub use transform::{
    CloudTrailTransform, JsonTransform, LambdaTransform, Transform, VPC_FLOW_LOG_DEFAULT_FIELDS,
    VPC_FLOW_LOG_FIELDS, VpcFlowLogTransform,
};
pub use validate::{FieldError, MAX_NAME_LEN, MAX_STREAM_NAME_LEN, RESERVED_ENV, ValidationErrors};
pub use workers::{BatchSpec, ByteSize, ServiceAccountSpec, WorkersSpec};

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The desired state of a LogSubscription.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "logsub.io",
    version = "v1alpha1",
    kind = "LogSubscription",
    plural = "logsubscriptions",
    shortname = "lsub",
    namespaced,
    status = "LogSubscriptionStatus",
    derive = "PartialEq",
    doc = "A LogSubscription sends the chosen CloudWatch Logs log groups through a Kinesis data stream to Elasticsearch/OpenSearch or S3: the controller keeps one subscription filter per selected log group and runs workers that read the stream, turn each log event into a document and deliver it, with nothing lost and nothing duplicated.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Sink","type":"string","jsonPath":".status.sink"}"#,
    printcolumn = r#"{"name":"Log groups","type":"integer","jsonPath":".status.logGroupCount"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Delivered","type":"integer","jsonPath":".status.delivery.eventsDelivered"}"#,
    printcolumn = r#"{"name":"Dead-lettered","type":"integer","priority":1,"jsonPath":".status.delivery.deadLettered"}"#,
    printcolumn = r#"{"name":"Stream","type":"string","priority":1,"jsonPath":".status.streamArn"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("size(self.metadata.name) <= 63").message("metadata.name must be at most 63 characters: it is a label value on the workers and their leases")
)]
#[serde(rename_all = "camelCase")]
pub struct LogSubscriptionSpec {
    /// AWS region of the log groups and the stream, e.g. `us-east-1`. Defaults to
    /// the controller's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"))]
    pub region: Option<String>,

    /// Which log groups to subscribe and how their events are filtered.
    pub source: SourceSpec,

    /// The Kinesis data stream the subscription filters write to: an existing one,
    /// or one this LogSubscription creates and owns.
    pub stream: StreamSpec,

    /// What happens to the AWS resources when this LogSubscription is deleted.
    /// `Delete` removes the subscription filters it created and a managed stream
    /// (never an existing stream); `Retain` leaves them in place.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Transforms applied, in order, to each log event after it is decoded. Each
    /// item names exactly one transform.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new(
        "self.all(t, [has(t.json), has(t.vpcFlowLog), has(t.cloudTrail), has(t.lambda)].filter(x, x).size() == 1)"
    ).message("each transform must name exactly one of json, vpcFlowLog, cloudTrail or lambda"))]
    pub transforms: Vec<Transform>,

    /// Where the documents are delivered: exactly one of `elasticsearch` or `s3`.
    #[x_kube(validation = Rule::new("has(self.elasticsearch) != has(self.s3)")
        .message("exactly one sink must be set: elasticsearch or s3"))]
    pub sink: Sink,

    /// The worker pods that read the stream and deliver to the sink.
    #[serde(default)]
    pub workers: WorkersSpec,
}

/// What happens to the AWS resources of a deleted LogSubscription.
#[derive(
    Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum DeletionPolicy {
    /// Remove the subscription filters this LogSubscription created, and its managed stream.
    #[default]
    Delete,
    /// Leave the filters and the stream in place.
    Retain,
}

impl LogSubscription {
    /// The name of the subscription filter this LogSubscription owns on each log
    /// group, and of its managed stream: `logsub-<namespace>-<name>`.
    pub fn aws_name(&self) -> String {
        let namespace = self.metadata.namespace.as_deref().unwrap_or("default");
        let name = self.metadata.name.as_deref().unwrap_or_default();
        format!("logsub-{namespace}-{name}")
    }
}
