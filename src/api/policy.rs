use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// What the LogSubscriptions of some namespaces may do. Every list is an
/// allow-list: what it does not name is refused, and an empty list allows nothing.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "logsub.io",
    version = "v1alpha1",
    kind = "LogSubscriptionPolicy",
    plural = "logsubscriptionpolicies",
    shortname = "lsubpolicy",
    derive = "PartialEq",
    doc = "A LogSubscriptionPolicy states what the LogSubscriptions of the namespaces it selects may do: which log groups they may subscribe, which Kinesis streams they may create or read, where they may deliver, and which IAM roles they may name. A LogSubscription is reconciled only when one policy selecting its namespace allows every part of it; otherwise it is Ready=False with reason NotPermitted and nothing is created for it in AWS.",
    printcolumn = r#"{"name":"Namespaces","type":"string","jsonPath":".spec.namespaces.names"}"#,
    printcolumn = r#"{"name":"Selector","type":"string","priority":1,"jsonPath":".spec.namespaces.selector"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LogSubscriptionPolicySpec {
    /// The namespaces this policy applies to: those named, and those whose
    /// labels the selector matches (`selector: {}` matches every namespace).
    pub namespaces: NamespaceSelection,

    /// The log groups that may be subscribed. A LogSubscription's selection is
    /// intersected with them: a prefix or pattern selection subscribes only
    /// the groups allowed here; a named group outside them is shown as
    /// `NotPermitted` and gets no filter.
    #[serde(default)]
    pub log_groups: LogGroupRules,

    /// The Kinesis streams that may be created or read.
    #[serde(default)]
    pub streams: StreamRules,

    /// Where documents may be delivered.
    #[serde(default)]
    pub sinks: SinkRules,

    /// The IAM roles a LogSubscription may name.
    #[serde(default)]
    pub roles: RoleRules,

    /// What the worker pods may be given.
    #[serde(default)]
    pub workers: WorkerRules,
}

/// Namespaces by name and/or by labels.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("(has(self.names) && size(self.names) > 0) || has(self.selector)")
    .message("name namespaces, or give a selector (`{}` selects every namespace)"))]
pub struct NamespaceSelection {
    /// Namespace names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 63)))]
    pub names: Vec<String>,

    /// A label selector over namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// Log groups by exact name, name prefix or regular expression.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LogGroupRules {
    /// Exact log group names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 512)))]
    pub names: Vec<String>,

    /// Name prefixes, e.g. `/team-a/`. An empty prefix allows every log group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(max = 512)))]
    pub prefixes: Vec<String>,

    /// Regular expressions (Rust `regex` syntax) a whole log group name must
    /// match: `/team-a/.*` allows `/team-a/api`, not `/x/team-a/api`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 1024)))]
    pub patterns: Vec<String>,
}

/// Managed streams that may be created, and existing streams that may be read.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StreamRules {
    /// Whether LogSubscriptions may create (manage) their own stream, and how
    /// large. Absent: they may not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedStreamRule>,

    /// Existing streams that may be read: names (matched against
    /// `stream.existing.name`) or ARNs (matched against `stream.existing.arn`),
    /// where `*` matches any run of characters, e.g.
    /// `arn:aws:kinesis:us-east-1:123456789012:stream/team-a-*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 2048)))]
    pub existing: Vec<String>,
}

/// The managed streams that may be created.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ManagedStreamRule {
    /// The most shards a provisioned managed stream may have. Absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_shard_count: Option<i32>,

    /// Whether a managed stream may be on-demand (Kinesis scales it, and bills
    /// for it, without a limit).
    #[serde(default)]
    pub on_demand: bool,
}

/// Sinks that may be delivered to.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SinkRules {
    /// Elasticsearch/OpenSearch endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub elasticsearch: Vec<ElasticsearchRule>,

    /// S3 buckets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub s3: Vec<S3Rule>,
}

/// An Elasticsearch/OpenSearch endpoint that may be delivered to.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ElasticsearchRule {
    /// `scheme://host[:port][/path]`: the sink's endpoint must have this scheme,
    /// host and port (the scheme's default when none is given; `*` for any),
    /// and a path under this one. `*` in the host matches any run of
    /// characters, e.g. `https://*.search.team-a.example:443`.
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^https?://[^\s/?#@]+(/[^\s?#]*)?$")
    )]
    pub endpoint: String,

    /// Index, data stream and dead-letter index names that may be written
    /// (`*` matches any run of characters, and matches the sink's `%Y`-style
    /// placeholders as written), e.g. `team-a-*`. Absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 255)))]
    pub indices: Option<Vec<String>>,

    /// Allow credentials (basic auth, an API key, SigV4 signatures) to be sent
    /// to this endpoint over plain `http`. Off: credentials go over `https` only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub credentials_over_http: bool,
}

/// An S3 bucket (and key prefixes) that may be delivered to.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Rule {
    /// Bucket name; `*` matches any run of characters.
    #[schemars(length(min = 1, max = 63))]
    pub bucket: String,

    /// Key prefixes the sink's `prefix` must start with (as written, before its
    /// placeholders are filled), e.g. `team-a/`. Absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000), inner(length(max = 512)))]
    pub prefixes: Option<Vec<String>>,

    /// An S3-compatible endpoint the sink may name, as for Elasticsearch
    /// (`scheme://host[:port]`), or `*` for any. Absent: only Amazon S3 itself
    /// (no `endpoint` in the sink).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub endpoint: Option<String>,

    /// Allow the signed requests to go to an `http` endpoint.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub credentials_over_http: bool,
}

/// IAM roles that may be named, as ARNs where `*` matches any run of characters.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoleRules {
    /// Roles CloudWatch Logs may be told to assume to write into the stream
    /// (`source.roleArn`), e.g. `arn:aws:iam::123456789012:role/team-a-cwl-to-kinesis`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 2048)))]
    pub delivery: Vec<String>,

    /// Roles a LogSubscription may name in `aws.roleArn`: the identity of its
    /// CloudWatch Logs and Kinesis calls, and so the account they reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 2048)))]
    pub aws: Vec<String>,

    /// Roles the workers' ServiceAccount may be annotated to assume (IRSA:
    /// `workers.serviceAccount.annotations["eks.amazonaws.com/role-arn"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 2048)))]
    pub workers: Vec<String>,
}

/// What the worker pods may be given.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerRules {
    /// Names of the environment variables `workers.env` may set, where `*`
    /// matches any run of characters (e.g. `AWS_ACCESS_KEY_ID`, `RUST_*`).
    /// Variables that redirect or re-identify the workers
    /// (`AWS_ENDPOINT_URL*`, `*_PROXY`, `AWS_ROLE_ARN`, `AWS_CA_BUNDLE`,
    /// `SSL_CERT_*`) take what they read, and the credentials they hold, past
    /// the sink and role rules: list them only for namespaces trusted so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 256)))]
    pub env: Vec<String>,
}
