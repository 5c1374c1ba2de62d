use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::contract::Template;
use crate::contract::config::{S3Output, SinkConfigError, Target};

/// Where documents are delivered. Exactly one key is set.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum Sink {
    /// Elasticsearch or OpenSearch, through the `_bulk` API. Each document's `_id`
    /// is its CloudWatch event id, so a replay never duplicates.
    Elasticsearch(ElasticsearchSink),
    /// Amazon S3 or an S3-compatible store: NDJSON objects, one per shard batch,
    /// under deterministic keys, so a replay overwrites instead of duplicating.
    S3(S3Sink),
}

impl Sink {
    /// A short description for the `Sink` printer column, e.g.
    /// `elasticsearch:cwl-%Y.%m.%d` or `s3://logs/{logGroup}/`.
    pub fn summary(&self) -> String {
        match self {
            Sink::Elasticsearch(es) => match es.index.as_ref().or(es.data_stream.as_ref()) {
                Some(target) => format!("elasticsearch:{target}"),
                None => "elasticsearch".to_owned(),
            },
            Sink::S3(s3) => format!("s3://{}/{}", s3.bucket, s3.prefix),
        }
    }
}

/// Delivery to Elasticsearch 8 / OpenSearch 2+ with `_bulk` `create`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.index) != has(self.dataStream)")
    .message("exactly one of index or dataStream must be set"))]
pub struct ElasticsearchSink {
    /// Base URL of the cluster, e.g. `https://search.example:9200`.
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    )]
    pub endpoint: String,

    /// Index name, with `strftime` placeholders filled from each event's time in
    /// UTC: `%Y`, `%m`, `%d`, `%H` (e.g. `cwl-%Y.%m.%d`, one index a day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub index: Option<String>,

    /// Data stream name, e.g. `logs-aws.vpcflow-default`. An index template with
    /// `data_stream` must match it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub data_stream: Option<String>,

    /// How the workers authenticate. Omit for an open cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<ElasticsearchAuth>,

    /// TLS settings for an `https` endpoint whose certificate is not signed by a
    /// public CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// Where documents the cluster rejects for good (mapping errors, bad
    /// documents) are written, with the error and the original event. Without it
    /// such documents are counted and logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetter>,

    /// An index template the workers install at start for the index pattern
    /// or data stream: `@timestamp` a date, `@message` text, the other `@`
    /// fields keywords. An existing template of the same name is left alone
    /// unless `overwrite` is set. Omit to manage templates yourself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_template: Option<IndexTemplateSpec>,
}

/// The index template logsub installs.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IndexTemplateSpec {
    /// Primary shards of each new index.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1024))]
    pub shards: i32,
    /// Replicas of each shard.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 16))]
    pub replicas: i32,
    /// Replace a template of the same name that is already there.
    #[serde(default)]
    pub overwrite: bool,
}

fn one() -> i32 {
    1
}

impl ElasticsearchSink {
    /// The index template or data stream written to, when exactly one is set
    /// and an index template parses.
    pub fn target(&self) -> Result<Target, SinkConfigError> {
        Target::parse(self.index.as_deref(), self.data_stream.as_deref())
    }
}

/// Credentials for Elasticsearch/OpenSearch. Exactly one key is set.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum ElasticsearchAuth {
    /// HTTP basic authentication.
    Basic(BasicAuth),
    /// An Elasticsearch API key (`Authorization: ApiKey …`).
    ApiKey(ApiKeyAuth),
    /// AWS Signature Version 4, for Amazon OpenSearch Service, with the workers' AWS
    /// credentials (IRSA, EKS Pod Identity or the default chain).
    AwsSigV4(AwsSigV4Auth),
}

/// Basic authentication from a Secret in the LogSubscription's namespace with the
/// keys `username` and `password` (the `kubernetes.io/basic-auth` Secret type).
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuth {
    /// The Secret holding `username` and `password`.
    pub secret_ref: SecretRef,
}

/// An API key from a Secret in the LogSubscription's namespace.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyAuth {
    /// The Secret and key holding the API key in its encoded form (base64 of
    /// `id:api_key`, the `encoded` value Elasticsearch returns). Key default: `apiKey`.
    pub secret_ref: SecretKeyRef,
}

/// AWS SigV4 request signing.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AwsSigV4Auth {
    /// Region of the domain or collection. Defaults to the LogSubscription's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"))]
    pub region: Option<String>,

    /// `es` for a managed Amazon OpenSearch Service domain, `aoss` for OpenSearch
    /// Serverless.
    #[serde(default)]
    pub service: SigV4Service,
}

/// The AWS service name requests are signed for.
#[derive(
    Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[serde(rename_all = "lowercase")]
pub enum SigV4Service {
    /// Amazon OpenSearch Service (managed domains).
    #[default]
    Es,
    /// Amazon OpenSearch Serverless.
    Aoss,
}

/// A Secret in the LogSubscription's namespace.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
}

/// One key of a Secret in the LogSubscription's namespace.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,

    /// Key within the Secret; each use documents its default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: Option<String>,
}

impl SecretKeyRef {
    /// The key, or `default` when none is given.
    pub fn key_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.key.as_deref().unwrap_or(default)
    }
}

/// TLS settings.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A Secret key holding the PEM CA bundle that signs the server's certificate.
    /// Key default: `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
}

/// The dead-letter destination of an Elasticsearch sink.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// Index receiving rejected documents, with the error type and reason, the
    /// original event, and its shard and sequence number.
    #[schemars(length(min = 1, max = 255))]
    pub index: String,
}

/// Delivery to S3 or an S3-compatible store.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Sink {
    /// Bucket name.
    #[schemars(
        length(min = 3, max = 63),
        regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    )]
    pub bucket: String,

    /// Key prefix template. Placeholders: `{logGroup}` (without its leading `/`),
    /// `{account}`, `{region}`, `{namespace}`, `{name}`, and the UTC time of the
    /// batch's first event as `%Y`, `%m`, `%d`, `%H` (`%%` is a literal `%`).
    /// Hive-style partitions work: `{logGroup}/year=%Y/month=%m/day=%d/`. The
    /// object name `<shardId>/<firstSequence>-<lastSequence>.json[.gz|.zst]` follows.
    #[serde(default = "default_prefix")]
    #[schemars(length(max = 512))]
    pub prefix: String,

    /// Object compression.
    #[serde(default)]
    pub compression: Compression,

    /// Region of the bucket. Defaults to the LogSubscription's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"))]
    pub region: Option<String>,

    /// Endpoint URL of an S3-compatible store, e.g. `https://minio.example:9000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    )]
    pub endpoint: Option<String>,

    /// Address the bucket in the path (`endpoint/bucket/key`) instead of the host
    /// name; most S3-compatible stores need it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_path_style: bool,

    /// KMS key (id, alias or ARN) for SSE-KMS encryption of the objects. Omit for
    /// the bucket's default encryption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub kms_key_id: Option<String>,

    /// Storage class of the objects, e.g. `STANDARD_IA`. Omit for `STANDARD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<StorageClass>,
}

impl S3Sink {
    /// The parsed key prefix template.
    pub fn prefix_template(&self) -> Result<Template, SinkConfigError> {
        S3Output::parse_prefix(&self.prefix)
    }
}

fn default_prefix() -> String {
    S3Output::DEFAULT_PREFIX.to_owned()
}

/// Compression of the objects written to S3.
#[derive(
    Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip, `.json.gz`, `Content-Encoding: gzip`.
    #[default]
    Gzip,
    /// Zstandard, `.json.zst`.
    Zstd,
    /// Uncompressed `.json`.
    None,
}

/// S3 storage classes a log archive uses.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StorageClass {
    /// S3 Standard.
    Standard,
    /// S3 Standard-Infrequent Access.
    StandardIa,
    /// S3 One Zone-Infrequent Access.
    OnezoneIa,
    /// S3 Intelligent-Tiering.
    IntelligentTiering,
    /// S3 Glacier Instant Retrieval.
    GlacierIr,
    /// S3 Glacier Flexible Retrieval.
    Glacier,
    /// S3 Glacier Deep Archive.
    DeepArchive,
}
