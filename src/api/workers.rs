use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use kube::core::Duration;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::source::duration_schema;

/// The worker pods of a LogSubscription.
#[derive(Serialize, Deserialize, kube::KubeSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkersSpec {
    /// Number of worker pods. Shards are shared out among them through per-shard
    /// Leases; more replicas than shards leaves the extra ones idle as standbys.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,

    /// CPU and memory requests and limits of the worker container. When
    /// unset: requests of 100m CPU and 128Mi memory, and a 512Mi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The workers' ServiceAccount, e.g. annotated for IRSA
    /// (`eks.amazonaws.com/role-arn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccountSpec>,

    /// Extra environment variables of the worker container, e.g. AWS
    /// credentials from a Secret (`valueFrom.secretKeyRef`) where IRSA or EKS Pod
    /// Identity is not available, or `HTTPS_PROXY`. `POD_NAME` (the worker's
    /// identity) and `LOGSUB_LOG_FORMAT` are logsub's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(e, e.name != 'POD_NAME' && e.name != 'LOGSUB_LOG_FORMAT')")
        .message("POD_NAME and LOGSUB_LOG_FORMAT are set by logsub"))]
    pub env: Vec<EnvVar>,

    /// How events are grouped into sink requests.
    #[serde(default)]
    pub batch: BatchSpec,
}

fn default_replicas() -> i32 {
    1
}

impl Default for WorkersSpec {
    fn default() -> Self {
        WorkersSpec {
            replicas: default_replicas(),
            resources: None,
            service_account: None,
            env: Vec::new(),
            batch: BatchSpec::default(),
        }
    }
}

/// Settings of the workers' ServiceAccount.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountSpec {
    /// Annotations put on the ServiceAccount.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Batch limits: a batch is sent when any limit is reached.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BatchSpec {
    /// Most events in one batch.
    #[serde(default = "default_max_events")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_events: i32,

    /// Most bytes of encoded documents in one batch, as a quantity such as `5Mi`.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,

    /// Longest an event waits for its batch to fill, as a Go duration such as `1s`.
    #[serde(default = "default_max_wait")]
    #[schemars(schema_with = "duration_schema")]
    pub max_wait: Duration,
}

fn default_max_events() -> i32 {
    5000
}

fn default_max_bytes() -> ByteSize {
    ByteSize(5 * 1024 * 1024)
}

fn default_max_wait() -> Duration {
    std::time::Duration::from_secs(1).into()
}

impl Default for BatchSpec {
    fn default() -> Self {
        BatchSpec {
            max_events: default_max_events(),
            max_bytes: default_max_bytes(),
            max_wait: default_max_wait(),
        }
    }
}

/// A byte count written as a Kubernetes-style quantity: a whole number with an
/// optional `k`, `M`, `G` (powers of 1000) or `Ki`, `Mi`, `Gi` (powers of 1024) suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// Why a byte-size quantity does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{0:?} is not a byte size: use a whole number with an optional k, M, G, Ki, Mi or Gi suffix"
)]
pub struct ByteSizeError(String);

const BYTE_UNITS: &[(&str, u64)] = &[
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("", 1),
];

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ByteSizeError(s.to_owned());
        let (digits, multiplier) = BYTE_UNITS
            .iter()
            .find_map(|(suffix, m)| s.strip_suffix(suffix).map(|d| (d, *m)))
            .ok_or_else(err)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let n: u64 = digits.parse().map_err(|_| err())?;
        n.checked_mul(multiplier).map(ByteSize).ok_or_else(err)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The largest binary unit that divides exactly, so values round-trip.
        for (suffix, m) in [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
            if self.0 >= m && self.0.is_multiple_of(m) {
                return write!(f, "{}{suffix}", self.0 / m);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9]+(k|M|G|Ki|Mi|Gi)?$",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse() {
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("512", Some(512)),
            ("5Mi", Some(5 * 1024 * 1024)),
            ("64Ki", Some(65536)),
            ("1Gi", Some(1 << 30)),
            ("10k", Some(10_000)),
            ("2M", Some(2_000_000)),
            ("3G", Some(3_000_000_000)),
            ("", None),
            ("Mi", None),
            ("5MiB", None),
            ("-1", None),
            ("1.5Mi", None),
            (" 5Mi", None),
            ("99999999999999999999", None),
            ("18446744073709551615Gi", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                input.parse::<ByteSize>().ok().map(|b| b.0),
                *want,
                "{input:?}"
            );
        }
    }

    #[test]
    fn byte_sizes_round_trip() {
        for n in [0u64, 1, 1000, 1024, 5 << 20, 3 << 30, 1536, 1_000_000] {
            let printed = ByteSize(n).to_string();
            assert_eq!(printed.parse::<ByteSize>(), Ok(ByteSize(n)), "{printed}");
        }
        assert_eq!(ByteSize(5 << 20).to_string(), "5Mi");
    }

    proptest::proptest! {
        #[test]
        fn every_byte_size_round_trips(n: u64) {
            let printed = ByteSize(n).to_string();
            proptest::prop_assert_eq!(printed.parse::<ByteSize>(), Ok(ByteSize(n)));
        }

        #[test]
        fn parsing_never_panics(s in "\\PC{0,24}") {
            let _ = s.parse::<ByteSize>();
        }
    }
}
