//! Whether a LogSubscription may do what its spec asks (pure). Each
//! LogSubscriptionPolicy selecting its namespace is tried: the LogSubscription
//! is permitted when one allows its stream, its sink and its delivery role;
//! its log groups are then narrowed to those any permitting policy allows.
//! Nothing is allowed that a policy does not list, and a policy that cannot
//! be read (a regex that does not compile) allows nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use crate::api::{
    ElasticsearchRule, LogSubscription, LogSubscriptionPolicy, S3Rule, Sink, StreamRef,
};

/// The ServiceAccount annotation that names the IAM role its pods assume.
const IRSA_ROLE: &str = "eks.amazonaws.com/role-arn";

/// A policy, parsed once for the many LogSubscriptions it is checked against.
#[derive(Debug)]
pub struct Policy {
    name: String,
    version: String,
    spec: crate::api::LogSubscriptionPolicySpec,
    selector: Option<Selector>,
    patterns: Vec<regex::Regex>,
    /// Why the policy cannot be used, when it cannot: it then allows nothing.
    broken: Option<String>,
}

impl Policy {
    /// Parses `policy`'s selector and regexes.
    pub fn new(policy: &LogSubscriptionPolicy) -> Policy {
        let spec = policy.spec.clone();
        let mut broken = Vec::new();
        let selector = spec.namespaces.selector.clone().and_then(|s| {
            Selector::try_from(s)
                .map_err(|e| broken.push(format!("spec.namespaces.selector: {e}")))
                .ok()
        });
        let patterns = spec
            .log_groups
            .patterns
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                regex::RegexBuilder::new(&format!("^(?:{p})$"))
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| broken.push(format!("spec.logGroups.patterns[{i}]: {e}")))
                    .ok()
            })
            .collect();
        let endpoints = spec
            .sinks
            .elasticsearch
            .iter()
            .map(|r| r.endpoint.as_str())
            .chain(spec.sinks.s3.iter().filter_map(|r| r.endpoint.as_deref()));
        for endpoint in endpoints.filter(|e| *e != "*") {
            if let Err(e) = EndpointRule::parse(endpoint) {
                broken.push(format!("endpoint {endpoint:?}: {e}"));
            }
        }
        Policy {
            name: policy.name_any(),
            version: policy.resource_version().unwrap_or_default(),
            spec,
            selector,
            patterns,
            broken: (!broken.is_empty()).then(|| broken.join("; ")),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its resourceVersion, which changes with every edit.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Why it allows nothing, when it cannot be used.
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// Whether it applies to the namespace `name` labelled `labels`.
    pub fn selects(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        let namespaces = &self.spec.namespaces;
        namespaces.names.iter().any(|n| n == name)
            || self.selector.as_ref().is_some_and(|s| s.matches(labels))
            // A selector that does not parse selects what it could have.
            || (self.selector.is_none() && namespaces.selector.is_some())
    }

    /// Whether it allows subscribing the log group `name`.
    pub fn allows_group(&self, name: &str) -> bool {
        let rules = &self.spec.log_groups;
        self.broken.is_none()
            && (rules.names.iter().any(|n| n == name)
                || rules.prefixes.iter().any(|p| name.starts_with(p.as_str()))
                || self.patterns.iter().any(|p| p.is_match(name)))
    }

    /// The first part of `lsub` this policy does not allow, or `None`.
    fn refusal(&self, lsub: &LogSubscription) -> Option<Refusal> {
        if let Some(broken) = &self.broken {
            return Some(Refusal::new(
                "spec",
                format!("the policy allows nothing until it is fixed: {broken}"),
            ));
        }
        let spec = &lsub.spec;
        // Validation refuses such a spec first; here it must not pass either.
        let Some(stream) = spec.stream.reference() else {
            return Some(Refusal::new("spec.stream", "names no stream"));
        };
        let identity = spec.aws.as_ref().map(|a| &a.role_arn);
        identity
            .filter(|role| !any_glob(&self.spec.roles.aws, role))
            .map(|role| {
                Refusal::new(
                    "spec.aws.roleArn",
                    format!(
                        "{role} is not among roles.aws {}",
                        list(&self.spec.roles.aws)
                    ),
                )
            })
            .or_else(|| self.stream_refusal(stream))
            .or_else(|| {
                let role = &spec.source.role_arn;
                (!any_glob(&self.spec.roles.delivery, role)).then(|| {
                    Refusal::new(
                        "spec.source.roleArn",
                        format!(
                            "{role} is not among roles.delivery {}",
                            list(&self.spec.roles.delivery)
                        ),
                    )
                })
            })
            .or_else(|| match &spec.sink {
                Sink::Elasticsearch(es) => {
                    elasticsearch_refusal(es, &self.spec.sinks.elasticsearch)
                }
                Sink::S3(s3) => s3_refusal(s3, &self.spec.sinks.s3),
            })
            .or_else(|| self.workers_refusal(&spec.workers))
    }

    /// The workers' environment and IRSA role: either can send what they
    /// read, or act, past every other rule.
    fn workers_refusal(&self, workers: &crate::api::WorkersSpec) -> Option<Refusal> {
        let allowed = &self.spec.workers.env;
        let env = workers
            .env
            .iter()
            .enumerate()
            .find(|(_, e)| !any_glob(allowed, &e.name));
        if let Some((i, var)) = env {
            return Some(Refusal::new(
                &format!("spec.workers.env[{i}]"),
                format!("{} is not among workers.env {}", var.name, list(allowed)),
            ));
        }
        let role = workers
            .service_account
            .as_ref()
            .and_then(|sa| sa.annotations.get(IRSA_ROLE))?;
        (!any_glob(&self.spec.roles.workers, role)).then(|| {
            Refusal::new(
                "spec.workers.serviceAccount.annotations",
                format!(
                    "{IRSA_ROLE} {role} is not among roles.workers {}",
                    list(&self.spec.roles.workers)
                ),
            )
        })
    }

    fn stream_refusal(&self, stream: StreamRef<'_>) -> Option<Refusal> {
        let rules = &self.spec.streams;
        let (arns, names): (Vec<String>, Vec<String>) = rules
            .existing
            .iter()
            .cloned()
            .partition(|r| r.starts_with("arn:"));
        match stream {
            StreamRef::Name(name) if !any_glob(&names, name) => Some(Refusal::new(
                "spec.stream.existing.name",
                format!(
                    "{name} is not among the stream names streams.existing allows {}",
                    list(&names)
                ),
            )),
            StreamRef::Arn(arn) if !any_glob(&arns, arn) => Some(Refusal::new(
                "spec.stream.existing.arn",
                format!(
                    "{arn} is not among the stream ARNs streams.existing allows {}",
                    list(&arns)
                ),
            )),
            StreamRef::Managed(managed) => match &rules.managed {
                None => Some(Refusal::new(
                    "spec.stream.managed",
                    "managed streams are not allowed (streams.managed is not set)",
                )),
                Some(rule) if managed.on_demand.is_some() && !rule.on_demand => Some(Refusal::new(
                    "spec.stream.managed.onDemand",
                    "on-demand streams are not allowed (streams.managed.onDemand is false)",
                )),
                Some(rule) => match (managed.shard_count, rule.max_shard_count) {
                    (Some(n), Some(max)) if n > max => Some(Refusal::new(
                        "spec.stream.managed.shardCount",
                        format!("{n} shards is more than streams.managed.maxShardCount {max}"),
                    )),
                    _ => None,
                },
            },
            _ => None,
        }
    }
}

/// Why a policy does not allow a LogSubscription: the field and the rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The spec field at fault.
    pub field: String,
    /// Which rule it breaks, and how.
    pub rule: String,
}

impl Refusal {
    fn new(field: &str, rule: impl Into<String>) -> Refusal {
        Refusal {
            field: field.to_owned(),
            rule: rule.into(),
        }
    }
}

/// A LogSubscription no policy permits.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotPermitted {
    /// No policy selects its namespace.
    #[error(
        "no LogSubscriptionPolicy selects namespace {0}; a platform administrator must allow it"
    )]
    NoPolicy(String),
    /// Each policy selecting it refuses a part of it.
    #[error("{}", refused(.0))]
    Refused(Vec<(String, Refusal)>),
}

fn refused(refusals: &[(String, Refusal)]) -> String {
    refusals
        .iter()
        .map(|(policy, r)| {
            format!(
                "{}: not allowed by LogSubscriptionPolicy {policy}: {}",
                r.field, r.rule
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a permitted LogSubscription may do: the policies permitting it, and
/// through them, its log groups.
#[derive(Clone, Debug)]
pub struct Grant(Vec<Arc<Policy>>);

impl Grant {
    /// Whether any permitting policy allows the log group `name`.
    pub fn allows_group(&self, name: &str) -> bool {
        self.0.iter().any(|p| p.allows_group(name))
    }

    /// The permitting policies' names, for the status.
    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|p| p.name()).collect()
    }

    /// Changes when a permitting policy changes or another one permits:
    /// then the log groups are resolved again.
    pub fn fingerprint(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .map(|p| (p.name().to_owned(), p.version().to_owned()))
            .collect()
    }
}

/// Whether `lsub`, in a namespace labelled `labels`, is permitted by one of
/// `policies`.
pub fn authorize(
    lsub: &LogSubscription,
    labels: &BTreeMap<String, String>,
    policies: &[Arc<Policy>],
) -> Result<Grant, NotPermitted> {
    let namespace = lsub.namespace().unwrap_or_default();
    let mut selecting: Vec<&Arc<Policy>> = policies
        .iter()
        .filter(|p| p.selects(&namespace, labels))
        .collect();
    if selecting.is_empty() {
        return Err(NotPermitted::NoPolicy(namespace));
    }
    selecting.sort_by(|a, b| a.name().cmp(b.name()));
    let mut refusals = Vec::new();
    let mut permitting = Vec::new();
    for policy in selecting {
        match policy.refusal(lsub) {
            Some(refusal) => refusals.push((policy.name().to_owned(), refusal)),
            None => permitting.push(policy.clone()),
        }
    }
    if permitting.is_empty() {
        Err(NotPermitted::Refused(refusals))
    } else {
        Ok(Grant(permitting))
    }
}

fn any_glob(globs: &[String], value: &str) -> bool {
    globs.iter().any(|g| crate::api::glob_matches(g, value))
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        format!("({})", items.join(", "))
    }
}

/// `scheme://host[:port][/path]` as a policy writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct EndpointRule {
    scheme: String,
    /// Lowercase; `*` matches any run of characters.
    host: String,
    /// `None`: any port.
    port: Option<u16>,
    /// Without a trailing `/`; empty for any path.
    path: String,
}

impl EndpointRule {
    fn parse(rule: &str) -> Result<EndpointRule, String> {
        let (scheme, rest) = rule
            .split_once("://")
            .ok_or("must be scheme://host[:port][/path]")?;
        let default_port = match scheme {
            "https" => 443,
            "http" => 80,
            _ => return Err(format!("scheme {scheme:?} is neither http nor https")),
        };
        let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        let (host, port) = match authority.strip_prefix('[') {
            // An IPv6 literal keeps its brackets, as url::Url::host_str gives it.
            Some(v6) => {
                let (addr, after) = v6.split_once(']').ok_or("an unclosed [")?;
                (format!("[{addr}]"), after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port)),
                None => (authority.to_owned(), None),
            },
        };
        if host.is_empty() || host.contains('@') {
            return Err("needs a host and no user".to_owned());
        }
        let port = match port {
            None => Some(default_port),
            Some("*") => None,
            Some(p) => Some(
                p.parse()
                    .map_err(|_| format!("port {p:?} is not a number or *"))?,
            ),
        };
        Ok(EndpointRule {
            scheme: scheme.to_owned(),
            host: host.to_ascii_lowercase(),
            port,
            path: path.trim_end_matches('/').to_owned(),
        })
    }

    fn matches(&self, url: &url::Url) -> bool {
        let path = url.path();
        url.scheme() == self.scheme
            && url.host_str().is_some_and(|h| host_matches(&self.host, h))
            && self
                .port
                .is_none_or(|p| url.port_or_known_default() == Some(p))
            && (self.path.is_empty()
                || path == self.path
                || path
                    .strip_prefix(&self.path)
                    .is_some_and(|rest| rest.starts_with('/')))
    }
}

/// Whether `host` matches the rule's `pattern`, where `*` alone is any host
/// and otherwise matches within one DNS label, as a certificate's wildcard
/// does: `*.team-a.example` is not `evil.example.team-a.example`'s.
fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let (patterns, labels): (Vec<&str>, Vec<&str>) =
        (pattern.split('.').collect(), host.split('.').collect());
    patterns.len() == labels.len()
        && patterns
            .iter()
            .zip(&labels)
            .all(|(p, l)| crate::api::glob_matches(p, l))
}

/// The sink's endpoint as the workers will reach it, or the refusal of one
/// they cannot be checked against.
fn endpoint(field: &str, endpoint: &str) -> Result<url::Url, Refusal> {
    let url = url::Url::parse(endpoint)
        .map_err(|e| Refusal::new(field, format!("{endpoint:?} is not a URL: {e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refusal::new(
            field,
            "carries a user in the URL; give credentials through auth",
        ));
    }
    // A server or proxy that decodes them could resolve a path outside the
    // prefix the policy allows.
    let path = url.path().to_ascii_lowercase();
    if ["%2f", "%5c", "%2e", "\\"].iter().any(|s| path.contains(s)) {
        return Err(Refusal::new(
            field,
            "has an encoded '/', '\\' or '.' in its path",
        ));
    }
    Ok(url)
}

fn shown(url: &url::Url) -> String {
    format!(
        "{}://{}:{}{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default(),
        url.path()
    )
}

fn elasticsearch_refusal(
    es: &crate::api::ElasticsearchSink,
    rules: &[ElasticsearchRule],
) -> Option<Refusal> {
    let field = "spec.sink.elasticsearch.endpoint";
    let url = match endpoint(field, &es.endpoint) {
        Ok(url) => url,
        Err(refusal) => return Some(refusal),
    };
    let reaching: Vec<&ElasticsearchRule> = rules
        .iter()
        .filter(|r| EndpointRule::parse(&r.endpoint).is_ok_and(|e| e.matches(&url)))
        .collect();
    if reaching.is_empty() {
        let allowed: Vec<String> = rules.iter().map(|r| r.endpoint.clone()).collect();
        return Some(Refusal::new(
            field,
            format!(
                "{} is not among sinks.elasticsearch {}",
                shown(&url),
                list(&allowed)
            ),
        ));
    }
    let credentialed = es.auth.is_some() && url.scheme() == "http";
    let plain_ok: Vec<&ElasticsearchRule> = reaching
        .into_iter()
        .filter(|r| !credentialed || r.credentials_over_http)
        .collect();
    if plain_ok.is_empty() {
        return Some(Refusal::new(
            "spec.sink.elasticsearch.auth",
            format!(
                "credentials would be sent over plain http to {}; the policy allows that only with credentialsOverHttp",
                shown(&url)
            ),
        ));
    }
    let mut names: Vec<(&str, &str)> = Vec::new();
    if let Some(index) = &es.index {
        names.push(("spec.sink.elasticsearch.index", index));
    }
    if let Some(ds) = &es.data_stream {
        names.push(("spec.sink.elasticsearch.dataStream", ds));
    }
    if let Some(dl) = &es.dead_letter {
        names.push(("spec.sink.elasticsearch.deadLetter.index", &dl.index));
    }
    let fits = |r: &ElasticsearchRule, name: &str| {
        r.indices.as_ref().is_none_or(|globs| any_glob(globs, name))
    };
    if plain_ok
        .iter()
        .any(|r| names.iter().all(|(_, name)| fits(r, name)))
    {
        return None;
    }
    let (field, name) = names
        .iter()
        .find(|(_, name)| !plain_ok.iter().any(|r| fits(r, name)))
        .copied()
        .unwrap_or(("spec.sink.elasticsearch", ""));
    let allowed: Vec<String> = plain_ok
        .iter()
        .flat_map(|r| r.indices.iter().flatten().cloned())
        .collect();
    Some(Refusal::new(
        field,
        format!(
            "{name:?} is not among the indices allowed at {} {}",
            shown(&url),
            list(&allowed)
        ),
    ))
}

fn s3_refusal(s3: &crate::api::S3Sink, rules: &[S3Rule]) -> Option<Refusal> {
    let buckets: Vec<&S3Rule> = rules
        .iter()
        .filter(|r| crate::api::glob_matches(&r.bucket, &s3.bucket))
        .collect();
    if buckets.is_empty() {
        let allowed: Vec<String> = rules.iter().map(|r| r.bucket.clone()).collect();
        return Some(Refusal::new(
            "spec.sink.s3.bucket",
            format!("{} is not among sinks.s3 {}", s3.bucket, list(&allowed)),
        ));
    }
    let prefixed: Vec<&S3Rule> = buckets
        .into_iter()
        .filter(|r| {
            r.prefixes
                .as_ref()
                .is_none_or(|ps| ps.iter().any(|p| s3.prefix.starts_with(p.as_str())))
        })
        .collect();
    if prefixed.is_empty() {
        return Some(Refusal::new(
            "spec.sink.s3.prefix",
            format!(
                "{:?} starts with none of the key prefixes allowed in bucket {}",
                s3.prefix, s3.bucket
            ),
        ));
    }
    let field = "spec.sink.s3.endpoint";
    let url = match s3
        .endpoint
        .as_deref()
        .map(|e| endpoint(field, e))
        .transpose()
    {
        Ok(url) => url,
        Err(refusal) => return Some(refusal),
    };
    let reaches = |r: &S3Rule| match (&url, r.endpoint.as_deref()) {
        (_, Some("*")) => true,
        (None, rule) => rule.is_none(),
        (Some(_), None) => false,
        (Some(url), Some(rule)) => EndpointRule::parse(rule).is_ok_and(|e| e.matches(url)),
    };
    let reaching: Vec<&S3Rule> = prefixed.into_iter().filter(|r| reaches(r)).collect();
    let Some(url) = url else {
        return reaching.is_empty().then(|| {
            Refusal::new(
                field,
                "the bucket is allowed only at an S3-compatible endpoint",
            )
        });
    };
    if reaching.is_empty() {
        return Some(Refusal::new(
            field,
            format!(
                "{} is not an endpoint allowed for bucket {}",
                shown(&url),
                s3.bucket
            ),
        ));
    }
    // Every S3 request is signed with the workers' AWS credentials.
    (url.scheme() == "http" && !reaching.iter().any(|r| r.credentials_over_http)).then(|| {
        Refusal::new(
            field,
            format!(
                "signed requests would go over plain http to {}; the policy allows that only with credentialsOverHttp",
                shown(&url)
            ),
        )
    })
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Arc<Policy> {
        let policy: LogSubscriptionPolicy = serde_saphyr::from_str(yaml).unwrap();
        Arc::new(Policy::new(&policy))
    }

    fn team_a() -> Arc<Policy> {
        policy(
            r#"
apiVersion: logsub.io/v1alpha1
kind: LogSubscriptionPolicy
metadata: {name: team-a, resourceVersion: "7"}
spec:
  namespaces: {names: [team-a]}
  logGroups: {prefixes: [/team-a/], patterns: ["/shared/team-a-.*"]}
  streams:
    existing: [team-a-logs, "arn:aws:kinesis:us-east-1:111111111111:stream/team-a-*"]
    managed: {maxShardCount: 4}
  sinks:
    elasticsearch:
      - {endpoint: "https://search.team-a.example:9200/team-a", indices: ["team-a-*"]}
      - {endpoint: "http://plain.team-a.example:9200"}
    s3:
      - {bucket: team-a-archive, prefixes: [team-a/]}
      - {bucket: "team-a-local*", endpoint: "http://127.0.0.1:*", credentialsOverHttp: true}
  roles:
    delivery: ["arn:aws:iam::111111111111:role/team-a-*"]
    workers: ["arn:aws:iam::111111111111:role/team-a-worker"]
    aws: ["arn:aws:iam::111111111111:role/team-a-logsub"]
  workers: {env: [AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "RUST_*"]}
"#,
        )
    }

    fn lsub(namespace: &str, spec: &str) -> LogSubscription {
        serde_saphyr::from_str(&format!(
            r#"
apiVersion: logsub.io/v1alpha1
kind: LogSubscription
metadata: {{name: app, namespace: {namespace}}}
spec: {spec}
"#
        ))
        .unwrap()
    }

    const SOURCE: &str =
        r#"{logGroups: {pattern: "."}, roleArn: "arn:aws:iam::111111111111:role/team-a-cwl"}"#;

    fn with(stream: &str, sink: &str) -> LogSubscription {
        lsub(
            "team-a",
            &format!("{{source: {SOURCE}, stream: {stream}, sink: {sink}}}"),
        )
    }

    const STREAM: &str = "{existing: {name: team-a-logs}}";
    const SINK: &str = r#"{elasticsearch: {endpoint: "https://search.team-a.example:9200/team-a", index: "team-a-%Y.%m.%d"}}"#;

    fn refusal(lsub: &LogSubscription) -> Option<String> {
        authorize(lsub, &BTreeMap::new(), &[team_a()])
            .err()
            .map(|e| e.to_string())
    }

    /// Each attack a tenant can try with a spec, refused with the field and the rule.
    #[test]
    fn what_the_policy_does_not_list_is_refused_by_field() {
        let cases = [
            (STREAM, SINK, None),
            // Another team's stream, by name or ARN, and streams too large.
            (
                "{existing: {name: team-b-logs}}",
                SINK,
                Some("spec.stream.existing.name"),
            ),
            (
                r#"{existing: {arn: "arn:aws:kinesis:us-east-1:222222222222:stream/team-a-logs"}}"#,
                SINK,
                Some("spec.stream.existing.arn"),
            ),
            (
                r#"{existing: {arn: "arn:aws:kinesis:us-east-1:111111111111:stream/team-a-x"}}"#,
                SINK,
                None,
            ),
            ("{managed: {shardCount: 4}}", SINK, None),
            (
                "{managed: {shardCount: 5}}",
                SINK,
                Some("spec.stream.managed.shardCount"),
            ),
            (
                "{managed: {onDemand: {}}}",
                SINK,
                Some("spec.stream.managed.onDemand"),
            ),
            // Another host, port, scheme or path; a user in the URL; an index of another team.
            (
                STREAM,
                r#"{elasticsearch: {endpoint: "https://evil.example:9200", index: "team-a-x"}}"#,
                Some("spec.sink.elasticsearch.endpoint"),
            ),
            (
                STREAM,
                r#"{elasticsearch: {endpoint: "https://search.team-a.example:9200@evil.example/team-a", index: "team-a-x"}}"#,
                Some("spec.sink.elasticsearch.endpoint"),
            ),
            (
                STREAM,
                r#"{elasticsearch: {endpoint: "https://search.team-a.example:9201/team-a", index: "team-a-x"}}"#,
                Some("spec.sink.elasticsearch.endpoint"),
            ),
            (
                STREAM,
                r#"{elasticsearch: {endpoint: "http://search.team-a.example:9200/team-a", index: "team-a-x"}}"#,
                Some("spec.sink.elasticsearch.endpoint"),
            ),
            (
                STREAM,
                r#"{elasticsearch: {endpoint: "https://search.team-a.example:9200/team-ab", index: "team-a-x"}}"#,
                Some("spec.sink.elasticsearch.endpoint"),
            ),
            (
                STREAM,
                r#"{elasticsearch: {endpoint: "https://search.team-a.example:9200/team-a/../team-b", index: "team-a-x"}}"#,
                Some("spec.sink.elasticsearch.endpoint"),
            ),
            (
                STREAM,
                r#"{elasticsearch: {endpoint: "https://search.team-a.example:9200/team-a/sub", index: "team-b-x"}}"#,
                Some("spec.sink.elasticsearch.index"),
            ),
            (
                STREAM,
                r#"{elasticsearch: {endpoint: "https://search.team-a.example:9200/team-a", index: "team-a-x", deadLetter: {index: "team-b-dl"}}}"#,
                Some("spec.sink.elasticsearch.deadLetter.index"),
            ),
            // Credentials over plain http only where the rule says so.
            (
                STREAM,
                r#"{elasticsearch: {endpoint: "http://plain.team-a.example:9200", index: "x"}}"#,
                None,
            ),
            (
                STREAM,
                r#"{elasticsearch: {endpoint: "http://plain.team-a.example:9200", index: "x", auth: {apiKey: {secretRef: {name: k}}}}}"#,
                Some("spec.sink.elasticsearch.auth"),
            ),
            // Buckets, prefixes, endpoints.
            (
                STREAM,
                r#"{s3: {bucket: team-a-archive, prefix: "team-a/{logGroup}/"}}"#,
                None,
            ),
            (
                STREAM,
                r#"{s3: {bucket: team-a-archive, prefix: "team-b/"}}"#,
                Some("spec.sink.s3.prefix"),
            ),
            (
                STREAM,
                r#"{s3: {bucket: team-b-archive}}"#,
                Some("spec.sink.s3.bucket"),
            ),
            (
                STREAM,
                r#"{s3: {bucket: team-a-archive, prefix: "team-a/", endpoint: "https://s3.evil.example"}}"#,
                Some("spec.sink.s3.endpoint"),
            ),
            (
                STREAM,
                r#"{s3: {bucket: team-a-local, endpoint: "http://127.0.0.1:8333"}}"#,
                None,
            ),
            (
                STREAM,
                r#"{s3: {bucket: team-a-local}}"#,
                Some("spec.sink.s3.endpoint"),
            ),
        ];
        for (stream, sink, want) in cases {
            let got = refusal(&with(stream, sink));
            match (want, &got) {
                (None, None) => {}
                (Some(field), Some(message)) => assert!(
                    message.starts_with(&format!(
                        "{field}: not allowed by LogSubscriptionPolicy team-a"
                    )),
                    "{stream} {sink}: {message}"
                ),
                _ => panic!("{stream} {sink}: want {want:?}, got {got:?}"),
            }
        }
        // The delivery role.
        let role = lsub(
            "team-a",
            &format!(
                r#"{{source: {{logGroups: {{names: [/team-a/x]}}, roleArn: "arn:aws:iam::222222222222:role/team-a-cwl"}}, stream: {STREAM}, sink: {SINK}}}"#
            ),
        );
        assert!(refusal(&role).unwrap().starts_with("spec.source.roleArn"));
        // The identity of its AWS calls, and so the account they reach.
        let assumed = |role: &str| {
            lsub(
                "team-a",
                &format!(
                    r#"{{aws: {{roleArn: "{role}"}}, source: {SOURCE}, stream: {STREAM}, sink: {SINK}}}"#
                ),
            )
        };
        assert_eq!(
            refusal(&assumed("arn:aws:iam::111111111111:role/team-a-logsub")),
            None
        );
        assert!(
            refusal(&assumed("arn:aws:iam::222222222222:role/team-b-logsub"))
                .unwrap()
                .starts_with("spec.aws.roleArn: not allowed")
        );
        // The workers' environment and identity: an endpoint or proxy
        // variable would carry what they read past the sink rules.
        let workers = |workers: &str| {
            lsub(
                "team-a",
                &format!(
                    "{{source: {SOURCE}, stream: {STREAM}, sink: {SINK}, workers: {workers}}}"
                ),
            )
        };
        let key = r#"{name: AWS_ACCESS_KEY_ID, valueFrom: {secretKeyRef: {name: aws, key: id}}}"#;
        let irsa = |role: &str| {
            format!(
                r#"{{serviceAccount: {{annotations: {{eks.amazonaws.com/role-arn: "{role}"}}}}}}"#
            )
        };
        for (spec, want) in [
            (
                format!("{{env: [{key}, {{name: RUST_LOG, value: debug}}]}}"),
                None,
            ),
            (
                format!("{{env: [{key}, {{name: AWS_ENDPOINT_URL_KINESIS, value: http://evil}}]}}"),
                Some("spec.workers.env[1]: not allowed"),
            ),
            (
                "{env: [{name: HTTPS_PROXY, value: http://evil}]}".to_owned(),
                Some("spec.workers.env[0]: not allowed"),
            ),
            (irsa("arn:aws:iam::111111111111:role/team-a-worker"), None),
            (
                irsa("arn:aws:iam::111111111111:role/admin"),
                Some("spec.workers.serviceAccount.annotations: not allowed"),
            ),
        ] {
            let got = refusal(&workers(&spec));
            match want {
                None => assert_eq!(got, None, "{spec}"),
                Some(prefix) => assert!(
                    got.as_deref().is_some_and(|m| m.starts_with(prefix)),
                    "{spec}: {got:?}"
                ),
            }
        }
    }

    /// Policies select namespaces by name or labels; none selecting is a refusal.
    #[test]
    fn a_namespace_no_policy_selects_may_do_nothing() {
        let by_label = policy(
            r#"
apiVersion: logsub.io/v1alpha1
kind: LogSubscriptionPolicy
metadata: {name: labelled}
spec:
  namespaces: {selector: {matchLabels: {tenant: b}}}
  logGroups: {prefixes: [/team-b/]}
  streams: {existing: ["*"]}
  sinks: {s3: [{bucket: "*"}]}
  roles: {delivery: ["*"]}
"#,
        );
        let b = lsub(
            "team-b",
            &format!("{{source: {SOURCE}, stream: {STREAM}, sink: {{s3: {{bucket: b}}}}}}"),
        );
        let policies = [team_a(), by_label];
        assert_eq!(
            authorize(&b, &BTreeMap::new(), &policies).unwrap_err(),
            NotPermitted::NoPolicy("team-b".into())
        );
        let labels = BTreeMap::from([("tenant".to_owned(), "b".to_owned())]);
        let grant = authorize(&b, &labels, &policies).unwrap();
        assert_eq!(grant.names(), ["labelled"]);
        assert!(grant.allows_group("/team-b/api") && !grant.allows_group("/team-a/api"));
    }

    /// A pattern selection is narrowed to the groups the policy allows;
    /// policy patterns match whole names.
    #[test]
    fn log_groups_are_narrowed_to_the_policy() {
        let grant = authorize(&with(STREAM, SINK), &BTreeMap::new(), &[team_a()]).unwrap();
        let cases = [
            ("/team-a/api", true),
            ("/team-a/", true),
            ("/team-b/api", false),
            ("/x/team-a/api", false),
            ("/shared/team-a-db", true),
            ("/shared/team-b-db", false),
            ("/aws/cloudtrail", false),
        ];
        for (group, want) in cases {
            assert_eq!(grant.allows_group(group), want, "{group}");
        }
    }

    /// A policy that cannot be read allows nothing (fail closed), and says why.
    #[test]
    fn a_broken_policy_allows_nothing() {
        let broken = policy(
            r#"
apiVersion: logsub.io/v1alpha1
kind: LogSubscriptionPolicy
metadata: {name: broken}
spec:
  namespaces: {names: [team-a]}
  logGroups: {patterns: ["(unclosed"]}
  streams: {existing: ["*"]}
  sinks: {s3: [{bucket: "*"}]}
  roles: {delivery: ["*"]}
"#,
        );
        let message = authorize(&with(STREAM, SINK), &BTreeMap::new(), &[broken])
            .unwrap_err()
            .to_string();
        assert!(message.contains("spec.logGroups.patterns[0]"), "{message}");
    }

    #[test]
    fn endpoint_rules_parse() {
        let rule = |s| EndpointRule::parse(s);
        assert_eq!(
            rule("https://*.example:*/p/").unwrap(),
            EndpointRule {
                scheme: "https".into(),
                host: "*.example".into(),
                port: None,
                path: "/p".into()
            }
        );
        assert_eq!(rule("http://[::1]:9200").unwrap().host, "[::1]");
        assert_eq!(rule("http://H").unwrap().port, Some(80));
        assert!(rule("ftp://h").is_err() && rule("https://u@h").is_err() && rule("h").is_err());
        let url = url::Url::parse("http://[::1]:9200/x").unwrap();
        assert!(rule("http://[::1]:9200").unwrap().matches(&url));
    }

    #[test]
    fn a_host_glob_stays_in_its_label_and_encoded_separators_are_refused() {
        let rule = EndpointRule::parse("https://*.team-a.example:*/team-a").unwrap();
        let matches = |u: &str| rule.matches(&url::Url::parse(u).unwrap());
        assert!(matches("https://search.team-a.example:9200/team-a/x"));
        assert!(!matches("https://evil.example.team-a.example/team-a"));
        assert!(!matches("https://team-a.example/team-a"));
        assert!(host_matches("*", "anything.at.all"));
        assert!(host_matches(
            "search-*.es.amazonaws.com",
            "search-a.es.amazonaws.com"
        ));
        assert!(!host_matches(
            "search-*.es.amazonaws.com",
            "search-a.evil.es.amazonaws.com"
        ));
        // Encoded dot segments are resolved by the URL parser: outside the prefix.
        assert!(!matches("https://search.team-a.example/team-a/%2e%2E/x"));
        for path in [
            "/team-a/..%2Fteam-b",
            "/team-a/%2e%2e%2fteam-b",
            "/team-a/..%5cteam-b",
        ] {
            let url = format!("https://search.team-a.example{path}");
            assert!(endpoint("f", &url).is_err(), "{path}");
        }
        assert!(endpoint("f", "https://search.team-a.example/team-a/x").is_ok());
    }
}
