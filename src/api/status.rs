pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// What the controller observed and did. Written by the controller only.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LogSubscriptionStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Permitted, StreamReady, SubscriptionFilterReady, WorkersAvailable
    /// and Delivering; Ready carries the reason of the first one that is False,
    /// else of the first that is Unknown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// ARN of the Kinesis data stream in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_arn: Option<String>,

    /// The sink in short, for `kubectl get`: `elasticsearch:<index>` or `s3://<bucket>/<prefix>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<String>,

    /// How many log groups are selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_group_count: Option<i32>,

    /// The subscription filter state of each selected log group; at most 1,000
    /// are listed, those whose filter is not Active first (`logGroupCount`
    /// counts them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub log_groups: Vec<LogGroupStatus>,

    /// Desired and available worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<WorkersStatus>,

    /// Delivery health, folded from what the workers publish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryStatus>,
}

/// The subscription filter on one log group.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LogGroupStatus {
    /// Log group name.
    pub name: String,

    /// State of this LogSubscription's filter on the log group.
    pub filter: FilterState,

    /// Details when the filter is not Active, e.g. the AWS error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// State of a subscription filter.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterState {
    /// The filter exists and points at the stream.
    Active,
    /// Not created yet, or being retried after a transient error.
    Pending,
    /// The log group already has two subscription filters (the AWS limit).
    LimitExceeded,
    /// AWS denied the call (IAM permissions of the controller or the role).
    AccessDenied,
    /// CloudWatch Logs rejected the filter pattern.
    InvalidFilterPattern,
    /// CloudWatch Logs could not deliver its test message to the stream (check the
    /// role's trust policy and permissions).
    DestinationUnreachable,
    /// Another error; see the message.
    Failed,
    /// Named by the spec, but no LogSubscriptionPolicy permitting this
    /// LogSubscription allows the log group: it gets no filter.
    NotPermitted,
}

/// Desired and available worker pods.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WorkersStatus {
    /// Replicas asked for.
    pub desired: i32,
    /// Replicas available.
    pub available: i32,
}

/// Delivery health of the workers.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStatus {
    /// When the sink last acknowledged a delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivered_time: Option<Time>,

    /// Events delivered since the workers started counting.
    #[serde(default)]
    pub events_delivered: i64,

    /// Events the sink rejected for good and that went to the dead letter.
    #[serde(default)]
    pub dead_lettered: i64,

    /// How far the slowest shard's reader is behind the stream's tip, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub millis_behind_latest: Option<i64>,
}
