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
mod transform;
mod validate;
mod workers;

pub use crd::{crd, crd_files, crd_yaml, policy_crd};
pub use policy::{
    ElasticsearchRule, LogGroupRules, LogSubscriptionPolicy, LogSubscriptionPolicySpec,
    ManagedStreamRule, NamespaceSelection, RoleRules, S3Rule, SinkRules, StreamRules, WorkerRules,
};
pub use sink::{
    ApiKeyAuth, AwsSigV4Auth, BasicAuth, Compression, DeadLetter, ElasticsearchAuth,
    ElasticsearchSink, IndexTemplateSpec, S3Sink, SecretKeyRef, SecretRef, SigV4Service, Sink,
    StorageClass, TlsSpec,
};
pub(crate) use source::glob_matches;
pub use source::{Distribution, LogGroupSelector, SourceSpec};
pub use status::{
    Condition, DeliveryStatus, FilterState, LogGroupStatus, LogSubscriptionStatus, WorkersStatus,
};
pub use stream::{ExistingStream, ManagedStream, OnDemand, StreamRef, StreamSpec};
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

    /// The AWS identity of this LogSubscription's CloudWatch Logs and Kinesis
    /// calls, the controller's and the workers' alike: a role they assume.
    /// Without it, the controller's own identity and the workers' ServiceAccount's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsIdentity>,

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

/// A role to assume (STS AssumeRole), possibly in another account: the log
/// groups and the stream are then that account's.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct AwsIdentity {
    /// The role's ARN, e.g. `arn:aws:iam::111111111111:role/team-a-logsub`. It
    /// must trust the controller's and the workers' identities.
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}$"))]
    pub role_arn: String,

    /// The external ID the role's trust policy requires, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 1224), regex(pattern = r"^[\w+=,.@:/-]+$"))]
    pub external_id: Option<String>,
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
    fn namespace_and_name(&self) -> (&str, &str) {
        (
            self.metadata.namespace.as_deref().unwrap_or("default"),
            self.metadata.name.as_deref().unwrap_or_default(),
        )
    }

    /// The name of the subscription filter this LogSubscription owns on each
    /// log group: `logsub/<namespace>/<name>`. Neither a namespace nor a
    /// name can hold a `/`, so no two LogSubscriptions share it.
    pub fn filter_name(&self) -> String {
        let (namespace, name) = self.namespace_and_name();
        format!("logsub/{namespace}/{name}")
    }

    /// The name of its managed stream and of its index template:
    /// `logsub_<namespace>_<name>` (Kinesis and search allow no `/`, and
    /// neither a namespace nor a name can hold a `_`).
    pub fn resource_name(&self) -> String {
        let (namespace, name) = self.namespace_and_name();
        format!("logsub_{namespace}_{name}")
    }

    /// The name earlier versions gave all three, `logsub-<namespace>-<name>`,
    /// which two LogSubscriptions can share (`a-b`/`c` and `a`/`b-c`): what
    /// carries it is renamed, or kept, only when it is provably ours.
    pub fn legacy_name(&self) -> String {
        let (namespace, name) = self.namespace_and_name();
        format!("logsub-{namespace}-{name}")
    }

    /// The name of the managed stream: the earlier one when the status
    /// records a stream of that name (a stream cannot be renamed), else
    /// [`resource_name`](Self::resource_name).
    pub fn stream_name(&self) -> String {
        let legacy = self.legacy_name();
        let recorded = self
            .status
            .as_ref()
            .and_then(|s| s.stream_arn.as_deref())
            .and_then(|arn| arn.rsplit_once(":stream/"))
            .map(|(_, name)| name);
        if recorded == Some(legacy.as_str()) {
            legacy
        } else {
            self.resource_name()
        }
    }
}
