//! The worker's configuration file: what the controller renders into a ConfigMap
//! from a LogSubscription, built from the same API types the CRD uses. The
//! sink's part is checked as it is read (one target, templates that parse, an
//! endpoint that is a URL), so neither side checks it again.

use std::num::NonZeroU32;
use std::path::Path;

use kube::core::Duration;
use serde::{Deserialize, Serialize};

use crate::api::{BatchSpec, ByteSize, Compression, Transform};
use crate::contract::Template;

/// `logsub worker --config FILE`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerConfig {
    /// The LogSubscription served: its leases live in its namespace, labelled with its name.
    pub subscription: SubscriptionRef,
    /// AWS region of the stream; the default chain's region when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A role assumed to read the stream (`spec.aws`); the worker's own
    /// identity (its ServiceAccount's) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assume_role: Option<AssumeRole>,
    /// ARN of the Kinesis data stream.
    pub stream_arn: String,
    /// When the stream was created (Unix milliseconds), as the controller saw
    /// it: checkpoints belong to one stream, and a stream deleted and created
    /// again under the same name is another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_created: Option<i64>,
    /// Where shards without a checkpoint start.
    #[serde(default)]
    pub start_position: StartAt,
    /// Transforms, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transforms: Vec<Transform>,
    /// Where documents go.
    pub sink: OutputSink,
    /// Batch limits of the sink driver.
    #[serde(default)]
    pub batch: BatchSpec,
    /// Shard lease timing.
    #[serde(default)]
    pub leases: LeaseSettings,
    /// Largest inflated CloudWatch payload accepted.
    #[serde(default = "default_max_inflated")]
    pub max_inflated_bytes: ByteSize,
    /// Longest one record may take to decode and transform; past it the
    /// record becomes a `too_slow` dead letter.
    #[serde(default = "default_processing_budget")]
    pub processing_budget: Duration,
}

/// A role to assume, and the session name its calls carry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssumeRole {
    /// The role's ARN.
    pub role_arn: String,
    /// The external ID its trust policy requires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The session name.
    pub session_name: String,
}

/// A LogSubscription by namespace and name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// The start of a shard that has no checkpoint yet. Child shards always start at
/// their beginning, so nothing between parent and child is skipped.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum StartAt {
    /// The oldest record retained.
    #[default]
    TrimHorizon,
    /// Only new records.
    Latest,
    /// Records from this time on, in Unix milliseconds.
    AtTimestamp(i64),
}

/// Where documents are written.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum OutputSink {
    /// NDJSON on standard output, one document a line.
    Stdout {},
    /// Elasticsearch or OpenSearch through `_bulk`.
    Elasticsearch(ElasticsearchOutput),
    /// NDJSON objects in S3.
    S3(S3Output),
}

/// Delivery to S3 or an S3-compatible store, as the LogSubscription's sink says.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Output {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix template (see the LogSubscription API).
    #[serde(default = "default_prefix", with = "prefix_template")]
    pub prefix: Template,
    /// Object compression.
    #[serde(default)]
    pub compression: Compression,
    /// Region of the bucket; the worker's region when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Endpoint of an S3-compatible store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Path-style addressing (most S3-compatible stores need it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_path_style: bool,
    /// KMS key for SSE-KMS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// Storage class as S3 names it, e.g. `STANDARD_IA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

impl S3Output {
    /// The placeholders a key prefix may use.
    pub const PREFIX_VARS: &[&str] = &["logGroup", "account", "region", "namespace", "name"];

    /// The key prefix unless one is given: by log group, then by hour.
    pub const DEFAULT_PREFIX: &str = "{logGroup}/%Y/%m/%d/%H/";

    /// Parses a key prefix template.
    pub fn parse_prefix(prefix: &str) -> Result<Template, SinkConfigError> {
        Template::parse(prefix, Self::PREFIX_VARS).map_err(|e| SinkConfigError {
            field: "s3.prefix",
            message: e.to_string(),
        })
    }
}

fn default_prefix() -> Template {
    S3Output::parse_prefix(S3Output::DEFAULT_PREFIX).expect("the default prefix parses")
}

/// A key prefix as its template text.
mod prefix_template {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{S3Output, Template};

    pub fn serialize<S: Serializer>(prefix: &Template, to: S) -> Result<S::Ok, S::Error> {
        to.serialize_str(prefix.source())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<Template, D::Error> {
        let text = String::deserialize(from)?;
        S3Output::parse_prefix(&text).map_err(serde::de::Error::custom)
    }
}

/// A sink field whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SinkConfigError {
    /// The field, as the LogSubscription's sink names it
    /// (`elasticsearch.index`, `s3.prefix`, …).
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

/// Where an Elasticsearch sink writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An index name template, filled from each document's time.
    Index(Template),
    /// A data stream.
    DataStream(String),
}

impl Target {
    /// The target of a sink that names `index` or `dataStream`: exactly one.
    pub fn parse(
        index: Option<&str>,
        data_stream: Option<&str>,
    ) -> Result<Target, SinkConfigError> {
        match (index, data_stream) {
            (Some(index), None) => {
                Template::parse(index, &[])
                    .map(Target::Index)
                    .map_err(|e| SinkConfigError {
                        field: "elasticsearch.index",
                        message: e.to_string(),
                    })
            }
            (None, Some(ds)) => Ok(Target::DataStream(ds.to_owned())),
            _ => Err(SinkConfigError {
                field: "elasticsearch",
                message: "exactly one of index or dataStream must be set".to_owned(),
            }),
        }
    }

    /// The names a configuration file and the API give it: `index`, `dataStream`.
    fn names(&self) -> (Option<String>, Option<String>) {
        match self {
            Target::Index(t) => (Some(t.source().to_owned()), None),
            Target::DataStream(ds) => (None, Some(ds.clone())),
        }
    }
}

/// Delivery to Elasticsearch or OpenSearch: the LogSubscription's sink, with its
/// Secrets as the files the worker Pod mounts. Checked when read: a value of
/// this type has one target, templates that parse and an endpoint that is a URL.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(try_from = "ElasticsearchFile", into = "ElasticsearchFile")]
pub struct ElasticsearchOutput {
    /// Base URL, e.g. `https://search.example:9200`.
    pub endpoint: url::Url,
    /// The index template or data stream written to.
    pub target: Target,
    /// Index (template) for documents the cluster refuses for good.
    pub dead_letter_index: Option<Template>,
    /// Credentials, if the cluster wants them.
    pub auth: Option<ElasticsearchCredentials>,
    /// PEM file of the CA that signs the cluster's certificate.
    pub ca_file: Option<String>,
    /// gzip request bodies (bulk NDJSON compresses about 10:1).
    pub compress: bool,
    /// Bulk requests in flight at once.
    pub concurrency: NonZeroU32,
    /// The index template to install at start, if any.
    pub index_template: Option<IndexTemplateOutput>,
}

impl ElasticsearchOutput {
    /// Bulk requests in flight at once unless configured otherwise.
    pub const DEFAULT_CONCURRENCY: NonZeroU32 = NonZeroU32::new(4).expect("not zero");

    /// Delivery to `target` at `endpoint`, with the defaults for the rest.
    pub fn new(endpoint: &str, target: Target) -> Result<ElasticsearchOutput, SinkConfigError> {
        Ok(ElasticsearchOutput {
            endpoint: parse_endpoint(endpoint)?,
            target,
            dead_letter_index: None,
            auth: None,
            ca_file: None,
            compress: true,
            concurrency: Self::DEFAULT_CONCURRENCY,
            index_template: None,
        })
    }

    /// Parses a dead-letter index name template.
    pub fn parse_dead_letter_index(index: &str) -> Result<Template, SinkConfigError> {
        Template::parse(index, &[]).map_err(|e| SinkConfigError {
            field: "elasticsearch.deadLetter.index",
            message: e.to_string(),
        })
    }
}

fn parse_endpoint(endpoint: &str) -> Result<url::Url, SinkConfigError> {
    let url = url::Url::parse(endpoint).map_err(|e| SinkConfigError {
        field: "elasticsearch.endpoint",
        message: format!("{endpoint:?}: {e}"),
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(SinkConfigError {
            field: "elasticsearch.endpoint",
            message: format!("{endpoint:?} is not an http or https URL"),
        });
    }
    Ok(url)
}

/// [`ElasticsearchOutput`] as the configuration file spells it.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ElasticsearchFile {
    endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    index: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data_stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dead_letter_index: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<ElasticsearchCredentials>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca_file: Option<String>,
    #[serde(default = "yes")]
    compress: bool,
    #[serde(default = "default_concurrency")]
    concurrency: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    index_template: Option<IndexTemplateOutput>,
}

impl TryFrom<ElasticsearchFile> for ElasticsearchOutput {
    type Error = SinkConfigError;

    fn try_from(file: ElasticsearchFile) -> Result<ElasticsearchOutput, SinkConfigError> {
        Ok(ElasticsearchOutput {
            endpoint: parse_endpoint(&file.endpoint)?,
            target: Target::parse(file.index.as_deref(), file.data_stream.as_deref())?,
            dead_letter_index: file
                .dead_letter_index
                .as_deref()
                .map(ElasticsearchOutput::parse_dead_letter_index)
                .transpose()?,
            auth: file.auth,
            ca_file: file.ca_file,
            compress: file.compress,
            concurrency: NonZeroU32::new(file.concurrency).ok_or_else(|| SinkConfigError {
                field: "elasticsearch.concurrency",
                message: "must be at least 1".to_owned(),
            })?,
            index_template: file.index_template,
        })
    }
}

impl From<ElasticsearchOutput> for ElasticsearchFile {
    fn from(out: ElasticsearchOutput) -> ElasticsearchFile {
        let (index, data_stream) = out.target.names();
        ElasticsearchFile {
            endpoint: out.endpoint.into(),
            index,
            data_stream,
            dead_letter_index: out.dead_letter_index.map(|t| t.source().to_owned()),
            auth: out.auth,
            ca_file: out.ca_file,
            compress: out.compress,
            concurrency: out.concurrency.get(),
            index_template: out.index_template,
        }
    }
}

/// An index template to install, by name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IndexTemplateOutput {
    /// The template's name, e.g. `logsub_observability_vpc-flow`.
    pub name: String,
    /// An earlier name of this template: deleted when it is logsub's and
    /// covers the same indices (two templates of one priority cannot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// Primary shards of each new index.
    pub shards: i32,
    /// Replicas of each shard.
    pub replicas: i32,
    /// Replace a template of the same name.
    #[serde(default)]
    pub overwrite: bool,
}

/// How the worker authenticates to the search cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum ElasticsearchCredentials {
    /// HTTP basic: the `username` and `password` files of a mounted
    /// `kubernetes.io/basic-auth` Secret in this directory.
    Basic {
        /// The directory. `secret_dir` is read too: earlier controllers wrote that.
        #[serde(alias = "secret_dir")]
        secret_dir: String,
    },
    /// An API key in its encoded form, in this file.
    ApiKey {
        /// The file.
        file: String,
    },
    /// AWS SigV4 with the worker's AWS credentials (Amazon OpenSearch Service).
    AwsSigV4 {
        /// Region of the domain or collection; the worker's region when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
        /// `es` (managed domains) or `aoss` (serverless).
        #[serde(default)]
        service: crate::api::SigV4Service,
    },
}

fn yes() -> bool {
    true
}
fn default_concurrency() -> u32 {
    ElasticsearchOutput::DEFAULT_CONCURRENCY.get()
}

/// Shard lease timing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseSettings {
    /// A lease not renewed for this long may be taken by another worker.
    #[serde(default = "default_lease_duration")]
    pub duration: Duration,
    /// How often held leases are renewed and the balance is reconsidered; well
    /// inside `duration`.
    #[serde(default = "default_renew_interval")]
    pub renew_interval: Duration,
    /// Most leases stolen from other workers in one round.
    #[serde(default = "default_max_steal")]
    pub max_steal_per_round: i32,
    /// Least time between two checkpoint writes of one shard.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: Duration,
}

fn secs(n: u64) -> Duration {
    std::time::Duration::from_secs(n).into()
}
fn default_lease_duration() -> Duration {
    secs(15)
}
fn default_renew_interval() -> Duration {
    secs(5)
}
fn default_max_steal() -> i32 {
    1
}
fn default_checkpoint_interval() -> Duration {
    secs(5)
}
fn default_max_inflated() -> ByteSize {
    ByteSize(16 << 20)
}
fn default_processing_budget() -> Duration {
    // A full 16 MiB payload takes well under a second on one core.
    secs(10)
}

impl Default for LeaseSettings {
    fn default() -> Self {
        LeaseSettings {
            duration: default_lease_duration(),
            renew_interval: default_renew_interval(),
            max_steal_per_round: default_max_steal(),
            checkpoint_interval: default_checkpoint_interval(),
        }
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a worker configuration.
    #[error("{path} is not a worker configuration: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, with the line.
        message: String,
    },
    /// The values do not fit together.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl WorkerConfig {
    /// The largest inflated payload accepted unless configured otherwise.
    pub fn default_max_inflated() -> ByteSize {
        default_max_inflated()
    }

    /// The processing budget of a record unless configured otherwise.
    pub fn default_processing_budget() -> Duration {
        default_processing_budget()
    }

    /// Reads and checks a configuration file (YAML or JSON).
    pub fn load(path: &Path) -> Result<WorkerConfig, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let config: WorkerConfig =
            serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse {
                path: shown.clone(),
                message: e.to_string(),
            })?;
        config.check().map_err(|message| ConfigError::Invalid {
            path: shown,
            message,
        })?;
        Ok(config)
    }

    /// The rules between fields.
    pub fn check(&self) -> Result<(), String> {
        let leases = &self.leases;
        let duration = std::time::Duration::from(leases.duration);
        let renew = std::time::Duration::from(leases.renew_interval);
        if leases.duration.is_negative() || leases.renew_interval.is_negative() || renew.is_zero() {
            return Err("lease duration and renew interval must be positive".into());
        }
        if renew * 2 > duration {
            return Err(format!(
                "leases.renewInterval ({renew:?}) must be at most half of leases.duration ({duration:?}), so a \
                 live worker renews in time"
            ));
        }
        if self.processing_budget.is_negative() {
            return Err("processingBudget must not be negative".into());
        }
        if leases.max_steal_per_round < 0 {
            return Err("leases.maxStealPerRound must not be negative".into());
        }
        if !self.stream_arn.starts_with("arn:") {
            return Err(format!("streamArn {:?} is not an ARN", self.stream_arn));
        }
        Ok(())
    }

    /// The configuration as YAML, as the controller writes it.
    pub fn to_yaml(&self) -> String {
        // Plain data: serialization cannot fail.
        serde_saphyr::to_string(self).expect("the worker configuration serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::VpcFlowLogTransform;

    fn sample() -> WorkerConfig {
        WorkerConfig {
            subscription: SubscriptionRef {
                namespace: "observability".into(),
                name: "vpc-flow".into(),
            },
            region: Some("us-east-1".into()),
            assume_role: Some(AssumeRole {
                role_arn: "arn:aws:iam::111111111111:role/team-a".into(),
                external_id: Some("team-a".into()),
                session_name: "observability.vpc-flow@worker".into(),
            }),
            stream_arn: "arn:aws:kinesis:us-east-1:123456789012:stream/flow-logs".into(),
            stream_created: Some(1_795_635_868_000),
            start_position: StartAt::AtTimestamp(1_795_635_868_711),
            transforms: vec![Transform::VpcFlowLog(VpcFlowLogTransform::default())],
            sink: OutputSink::Stdout {},
            batch: BatchSpec::default(),
            leases: LeaseSettings::default(),
            max_inflated_bytes: default_max_inflated(),
            processing_budget: default_processing_budget(),
        }
    }

    #[test]
    fn round_trips_through_yaml() {
        let config = sample();
        let yaml = config.to_yaml();
        let back: WorkerConfig = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(back, config, "{yaml}");
    }

    /// What the controller writes for a sink is read back as the same
    /// checked values, with the defaults written out.
    #[test]
    fn a_sink_round_trips_as_checked_values() {
        let mut config = sample();
        let target = Target::parse(Some("cwl-%Y.%m.%d"), None).unwrap();
        let mut es = ElasticsearchOutput::new("https://search.example:9200/logs", target).unwrap();
        es.dead_letter_index = Some(ElasticsearchOutput::parse_dead_letter_index("dead").unwrap());
        config.sink = OutputSink::Elasticsearch(es.clone());
        let yaml = config.to_yaml();
        assert!(yaml.contains("index: cwl-%Y.%m.%d"), "{yaml}");
        assert!(yaml.contains("concurrency: 4"), "{yaml}");
        let back: WorkerConfig = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(back.sink, OutputSink::Elasticsearch(es));
        let minimal: OutputSink = serde_saphyr::from_str("s3: {bucket: b}").unwrap();
        let OutputSink::S3(s3) = minimal else {
            panic!("s3")
        };
        assert_eq!(s3.prefix.source(), S3Output::DEFAULT_PREFIX);
    }

    #[test]
    fn defaults_fill_a_minimal_file() {
        let minimal = "subscription: {namespace: ns, name: n}\nstreamArn: arn:aws:kinesis:us-east-1:1:stream/s\nsink: {stdout: {}}\n";
        let config: WorkerConfig = serde_saphyr::from_str(minimal).unwrap();
        assert_eq!(config.start_position, StartAt::TrimHorizon);
        assert_eq!(config.leases, LeaseSettings::default());
        assert_eq!(config.batch, BatchSpec::default());
        config.check().unwrap();
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("logsub-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cases = [
            (
                "subscription: {namespace: ns, name: n}\nsink: {stdout: {}}\n",
                "streamArn",
            ),
            (
                "subscription: {namespace: ns, name: n}\nstreamArn: arn:x\nsink: {stdout: {}}\nsurprise: 1\n",
                "surprise",
            ),
            (
                "subscription: {namespace: ns, name: n}\nstreamArn: arn:x\nsink: {stdout: {}}\nleases: {duration: 10s, renewInterval: 8s}\n",
                "at most half",
            ),
            (
                "subscription: {namespace: ns, name: n}\nstreamArn: flow\nsink: {stdout: {}}\n",
                "not an ARN",
            ),
            (
                "subscription: {namespace: ns, name: n}\nstreamArn: arn:x\nsink: {elasticsearch: {endpoint: 'http://s:9200', index: a, dataStream: b}}\n",
                "exactly one of index or dataStream",
            ),
            (
                "subscription: {namespace: ns, name: n}\nstreamArn: arn:x\nsink: {elasticsearch: {endpoint: 'http://s:9200', index: 'cwl-%q'}}\n",
                "elasticsearch.index: unknown placeholder %q",
            ),
            (
                "subscription: {namespace: ns, name: n}\nstreamArn: arn:x\nsink: {elasticsearch: {endpoint: 'search:9200', index: a}}\n",
                "endpoint",
            ),
            (
                "subscription: {namespace: ns, name: n}\nstreamArn: arn:x\nsink: {elasticsearch: {endpoint: 'http://s:9200', index: a, concurrency: 0}}\n",
                "elasticsearch.concurrency: must be at least 1",
            ),
            (
                "subscription: {namespace: ns, name: n}\nstreamArn: arn:x\nsink: {s3: {bucket: b, prefix: '{bucket}/'}}\n",
                "s3.prefix: unknown placeholder {bucket}",
            ),
        ];
        for (i, (text, want)) in cases.iter().enumerate() {
            let path = dir.join(format!("{i}.yaml"));
            std::fs::write(&path, text).unwrap();
            let err = WorkerConfig::load(&path).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
        let missing = WorkerConfig::load(&dir.join("missing.yaml")).unwrap_err();
        assert!(matches!(missing, ConfigError::Read { .. }));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
