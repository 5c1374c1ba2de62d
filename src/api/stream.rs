use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// The Kinesis data stream between CloudWatch Logs and the workers: exactly one of
/// `existing` or `managed`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.existing) != has(self.managed)")
    .message("exactly one of existing or managed must be set"))]
pub struct StreamSpec {
    /// A stream that already exists. It is never modified or deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing: Option<ExistingStream>,

    /// A stream created for this LogSubscription, named `logsub_<namespace>_<name>`,
    /// tagged with its UID, and deleted with it under `deletionPolicy: Delete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedStream>,
}

/// An existing Kinesis data stream, by name or by ARN.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.name) != has(self.arn)")
    .message("exactly one of name or arn must be set"))]
pub struct ExistingStream {
    /// Stream name, in this LogSubscription's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[a-zA-Z0-9_.-]+$"))]
    pub name: Option<String>,

    /// Stream ARN, e.g. `arn:aws:kinesis:us-east-1:123456789012:stream/flow-logs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^arn:aws[a-z-]*:kinesis:[a-z0-9-]+:[0-9]{12}:stream/[a-zA-Z0-9_.-]{1,128}$"
    ))]
    pub arn: Option<String>,
}

/// A stream this LogSubscription creates and owns: exactly one of `shardCount`
/// (provisioned) or `onDemand`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.shardCount) != has(self.onDemand)")
    .message("exactly one of shardCount or onDemand must be set"))]
pub struct ManagedStream {
    /// Provisioned capacity: the number of shards (each 1 MB/s or 1000 records/s in,
    /// 2 MB/s out). A change is applied with UpdateShardCount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub shard_count: Option<i32>,

    /// On-demand capacity: Kinesis scales the shards itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_demand: Option<OnDemand>,

    /// How long records stay readable, in hours (24 to 8760).
    #[serde(default = "default_retention_hours")]
    #[schemars(range(min = 24, max = 8760))]
    pub retention_hours: i32,
}

fn default_retention_hours() -> i32 {
    24
}

/// On-demand capacity mode; it has no settings.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
pub struct OnDemand {}

/// Which stream a spec names, once its exclusivity rules hold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StreamRef<'a> {
    /// An existing stream by name.
    Name(&'a str),
    /// An existing stream by ARN.
    Arn(&'a str),
    /// A stream the LogSubscription manages.
    Managed(&'a ManagedStream),
}

impl StreamSpec {
    /// The stream this spec names, or `None` when the exclusivity rules are broken
    /// (which admission prevents; [`validate`](crate::api::LogSubscriptionSpec::validate)
    /// reports it).
    pub fn reference(&self) -> Option<StreamRef<'_>> {
        match (&self.existing, &self.managed) {
            (Some(existing), None) => match (&existing.name, &existing.arn) {
                (Some(name), None) => Some(StreamRef::Name(name)),
                (None, Some(arn)) => Some(StreamRef::Arn(arn)),
                _ => None,
            },
            (None, Some(managed))
                if managed.shard_count.is_some() != managed.on_demand.is_some() =>
            {
                Some(StreamRef::Managed(managed))
            }
            _ => None,
        }
    }
}
