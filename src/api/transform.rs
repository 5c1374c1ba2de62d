use serde::{Deserialize, Serialize};

/// One transform, applied to every decoded log event. Exactly one key is set.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum Transform {
    /// A message that is a JSON object becomes document fields (nesting and types
    /// kept). Anything else, including broken JSON and JSON arrays, stays text.
    Json(JsonTransform),
    /// Parses VPC Flow Log records (default version 2 format, or a custom format).
    VpcFlowLog(VpcFlowLogTransform),
    /// Parses CloudTrail events delivered through CloudWatch Logs into fields.
    CloudTrail(CloudTrailTransform),
    /// Parses Lambda platform lines (START, END, REPORT with durations, memory and
    /// init duration) and the runtime's request-id prefixed lines.
    Lambda(LambdaTransform),
}

/// Settings of the `json` transform; it has none yet.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
pub struct JsonTransform {}

/// Settings of the `cloudTrail` transform; it has none yet.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
pub struct CloudTrailTransform {}

/// Settings of the `lambda` transform; it has none yet.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
pub struct LambdaTransform {}

/// Settings of the `vpcFlowLog` transform.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VpcFlowLogTransform {
    /// The flow log's custom format as its field names in order, as in the flow
    /// log's `LogFormat` without the `${}` (e.g. `version`, `srcaddr`, `pkt-srcaddr`,
    /// `flow-direction`). Empty means the default version 2 format.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(regex(pattern = r"^[a-z0-9-]+$")))]
    pub fields: Vec<String>,
}

/// The default (version 2) VPC Flow Logs format.
pub const VPC_FLOW_LOG_DEFAULT_FIELDS: &[&str] = &[
    "version",
    "account-id",
    "interface-id",
    "srcaddr",
    "dstaddr",
    "srcport",
    "dstport",
    "protocol",
    "packets",
    "bytes",
    "start",
    "end",
    "action",
    "log-status",
];

/// Every field a VPC flow log format may name (versions 2 to 8 of the AWS VPC Flow
/// Logs documentation).
pub const VPC_FLOW_LOG_FIELDS: &[&str] = &[
    // version 2
    "version",
    "account-id",
    "interface-id",
    "srcaddr",
    "dstaddr",
    "srcport",
    "dstport",
    "protocol",
    "packets",
    "bytes",
    "start",
    "end",
    "action",
    "log-status",
    // version 3
    "vpc-id",
    "subnet-id",
    "instance-id",
    "tcp-flags",
    "type",
    "pkt-srcaddr",
    "pkt-dstaddr",
    // version 4
    "region",
    "az-id",
    "sublocation-type",
    "sublocation-id",
    // version 5
    "pkt-src-aws-service",
    "pkt-dst-aws-service",
    "flow-direction",
    "traffic-path",
    // version 7
    "ecs-cluster-arn",
    "ecs-cluster-name",
    "ecs-container-instance-arn",
    "ecs-container-instance-id",
    "ecs-container-id",
    "ecs-second-container-id",
    "ecs-service-name",
    "ecs-task-definition-arn",
    "ecs-task-arn",
    "ecs-task-id",
    // version 8
    "reject-reason",
];

impl Transform {
    /// The transform's name as written in the spec.
    pub fn name(&self) -> &'static str {
        match self {
            Transform::Json(_) => "json",
            Transform::VpcFlowLog(_) => "vpcFlowLog",
            Transform::CloudTrail(_) => "cloudTrail",
            Transform::Lambda(_) => "lambda",
        }
    }
}

impl VpcFlowLogTransform {
    /// The field list in effect: the custom one, or the default format.
    pub fn effective_fields(&self) -> Vec<&str> {
        if self.fields.is_empty() {
            VPC_FLOW_LOG_DEFAULT_FIELDS.to_vec()
        } else {
            self.fields.iter().map(String::as_str).collect()
        }
    }
}
