//! What the schema cannot express: regexes that must compile, templates with
//! known placeholders, names that must be valid after rendering, bounds on
//! parsed quantities. Pure; the controller reports the errors as a condition.

use std::collections::HashSet;
use std::fmt;

use super::{
    ElasticsearchSink, LogSubscriptionSpec, S3Sink, Sink, SourceSpec, StreamSpec, Transform,
    VPC_FLOW_LOG_FIELDS, WorkersSpec,
};
use crate::contract::UtcHour;
use crate::contract::config::{ElasticsearchOutput, Target};

const MIN_RESCAN: std::time::Duration = std::time::Duration::from_secs(30);
const MAX_BATCH_BYTES: u64 = 100 << 20;
const MIN_BATCH_BYTES: u64 = 1 << 10;
const MAX_BATCH_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// One problem in a spec, with the path of the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, e.g. `spec.sink.elasticsearch.index`.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

/// Every problem found in a spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", e.path, e.message)?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// The longest name a LogSubscription may have: it is a label value
/// (`logsub.io/subscription`, `app.kubernetes.io/instance`) on its workers and
/// their leases. Admission enforces it too (a CEL rule on `metadata.name`).
pub const MAX_NAME_LEN: usize = 63;
/// Kinesis' limit on stream names, which a managed stream's name must meet.
pub const MAX_STREAM_NAME_LEN: usize = 128;
/// Environment variables the workers' identity and logging depend on; the
/// spec may not set them.
pub const RESERVED_ENV: &[&str] = &["POD_NAME", "LOGSUB_LOG_FORMAT"];

impl super::LogSubscription {
    /// Checks what is derived from the object's name and namespace, which
    /// admission cannot see together: the names logsub gives things in AWS
    /// and Kubernetes must be valid there.
    pub fn validate_names(&self) -> Result<(), ValidationErrors> {
        let mut errors = Errors::default();
        let name = self.metadata.name.as_deref().unwrap_or_default();
        if name.len() > MAX_NAME_LEN {
            errors.add(
                "metadata.name",
                format!("must be at most {MAX_NAME_LEN} characters: it is a label value on the workers and their leases"),
            );
        }
        let aws_name = self.stream_name();
        if self.spec.stream.managed.is_some() && aws_name.len() > MAX_STREAM_NAME_LEN {
            errors.add(
                "spec.stream.managed",
                format!(
                    "the managed stream would be named {aws_name:?}, {} characters; Kinesis allows {MAX_STREAM_NAME_LEN}: shorten the name or the namespace, or use an existing stream",
                    aws_name.len()
                ),
            );
        }
        if errors.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors.0))
        }
    }
}

impl LogSubscriptionSpec {
    /// Checks what admission cannot. Every problem is reported, not just the first.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = Errors::default();
        validate_source(&self.source, &mut errors);
        validate_stream(&self.stream, &mut errors);
        validate_transforms(&self.transforms, &mut errors);
        match &self.sink {
            Sink::Elasticsearch(es) => validate_elasticsearch(es, &mut errors),
            Sink::S3(s3) => validate_s3(s3, &mut errors),
        }
        validate_workers(&self.workers, &mut errors);
        if errors.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors.0))
        }
    }
}

fn validate_source(source: &SourceSpec, errors: &mut Errors) {
    let path = "spec.source.logGroups";
    let groups = &source.log_groups;
    if groups.names.is_empty() && groups.prefix.is_none() && groups.pattern.is_none() {
        errors.add(
            path,
            "at least one of names, prefix or pattern must select log groups",
        );
    }
    let mut seen = HashSet::new();
    for name in &groups.names {
        if !seen.insert(name) {
            errors.add(format!("{path}.names"), format!("{name:?} is listed twice"));
        }
    }
    if let Some(pattern) = &groups.pattern
        && let Err(e) = regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
    {
        errors.add(
            format!("{path}.pattern"),
            format!("not a valid regular expression: {e}"),
        );
    }
    if let Err(message) = check_filter_pattern(&source.filter_pattern) {
        errors.add("spec.source.filterPattern", message);
    }
    let rescan = &source.rescan_interval;
    if rescan.is_negative() || std::time::Duration::from(*rescan) < MIN_RESCAN {
        errors.add("spec.source.rescanInterval", "must be at least 30s");
    }
}

/// Structural checks of a CloudWatch Logs filter pattern: quotes closed, brackets
/// and braces balanced and not interleaved. CloudWatch Logs checks the rest.
fn check_filter_pattern(pattern: &str) -> Result<(), String> {
    let mut open: Vec<char> = Vec::new();
    let mut in_quote = false;
    let mut escaped = false;
    for c in pattern.chars() {
        if in_quote {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => in_quote = false,
                _ => escaped = false,
            }
            continue;
        }
        match c {
            '"' => in_quote = true,
            '[' | '{' | '(' => open.push(c),
            ']' | '}' | ')' => {
                let want = match c {
                    ']' => '[',
                    '}' => '{',
                    _ => '(',
                };
                if open.pop() != Some(want) {
                    return Err(format!("unbalanced '{c}'"));
                }
            }
            _ => {}
        }
    }
    if in_quote {
        return Err("unterminated quoted term".to_owned());
    }
    if let Some(c) = open.pop() {
        return Err(format!("unclosed '{c}'"));
    }
    Ok(())
}

fn validate_stream(stream: &StreamSpec, errors: &mut Errors) {
    if stream.reference().is_some() {
        return;
    }
    let message = match (&stream.existing, &stream.managed) {
        (Some(_), Some(_)) | (None, None) => (
            "spec.stream",
            "exactly one of existing or managed must be set",
        ),
        (Some(_), None) => (
            "spec.stream.existing",
            "exactly one of name or arn must be set",
        ),
        (None, Some(_)) => (
            "spec.stream.managed",
            "exactly one of shardCount or onDemand must be set",
        ),
    };
    errors.add(message.0, message.1);
}

fn validate_transforms(transforms: &[Transform], errors: &mut Errors) {
    let mut kinds = HashSet::new();
    for (i, transform) in transforms.iter().enumerate() {
        let path = format!("spec.transforms[{i}]");
        if !kinds.insert(transform.name()) {
            errors.add(&path, format!("{} is listed twice", transform.name()));
        }
        if let Transform::VpcFlowLog(vpc) = transform {
            let mut fields = HashSet::new();
            for field in &vpc.fields {
                if !VPC_FLOW_LOG_FIELDS.contains(&field.as_str()) {
                    errors.add(
                        format!("{path}.vpcFlowLog.fields"),
                        format!("unknown flow log field {field:?}"),
                    );
                } else if !fields.insert(field) {
                    errors.add(
                        format!("{path}.vpcFlowLog.fields"),
                        format!("{field:?} is listed twice"),
                    );
                }
            }
        }
    }
}

fn validate_elasticsearch(es: &ElasticsearchSink, errors: &mut Errors) {
    let path = "spec.sink.elasticsearch";
    check_url(&es.endpoint, &format!("{path}.endpoint"), errors);
    match es.target() {
        Err(e) if es.index.is_some() && es.data_stream.is_none() => {
            errors.add(format!("{path}.index"), e.message)
        }
        Err(e) => errors.add(path, e.message),
        Ok(Target::Index(t)) => {
            let sample = t.render(UtcHour::from_unix_millis(0), |_| String::new());
            if let Err(message) = check_index_name(&sample) {
                errors.add(format!("{path}.index"), message);
            }
        }
        Ok(Target::DataStream(ds)) => {
            if let Err(message) = check_data_stream_name(&ds).and_then(|()| check_index_name(&ds)) {
                errors.add(format!("{path}.dataStream"), message);
            }
        }
    }
    // Parsed as the workers parse it: a name template like the index.
    if let Some(dl) = &es.dead_letter
        && let Err(message) = ElasticsearchOutput::parse_dead_letter_index(&dl.index)
            .map_err(|e| e.message)
            .and_then(|t| {
                check_index_name(&t.render(UtcHour::from_unix_millis(0), |_| String::new()))
            })
    {
        errors.add(format!("{path}.deadLetter.index"), message);
    }
}

/// Elasticsearch/OpenSearch index naming rules.
fn check_index_name(name: &str) -> Result<(), String> {
    const FORBIDDEN: &[char] = &['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':'];
    if name.is_empty() || name.len() > 255 {
        return Err("an index name must be 1 to 255 bytes".to_owned());
    }
    if name != name.to_lowercase() {
        return Err(format!("{name:?} must be lowercase"));
    }
    if let Some(c) = name.chars().find(|c| FORBIDDEN.contains(c)) {
        return Err(format!("{name:?} must not contain {c:?}"));
    }
    if name.starts_with(['-', '_', '+']) || name == "." || name == ".." {
        return Err(format!(
            "{name:?} must not start with '-', '_' or '+', nor be '.' or '..'"
        ));
    }
    Ok(())
}

fn check_data_stream_name(name: &str) -> Result<(), String> {
    if name.contains('%') {
        return Err(
            "a data stream name is not a template; the date goes into its backing indices"
                .to_owned(),
        );
    }
    if name.starts_with('.') {
        return Err(format!("{name:?} must not start with '.'"));
    }
    Ok(())
}

fn validate_s3(s3: &S3Sink, errors: &mut Errors) {
    let path = "spec.sink.s3";
    if let Some(endpoint) = &s3.endpoint {
        check_url(endpoint, &format!("{path}.endpoint"), errors);
    }
    match s3.prefix_template() {
        Err(e) => errors.add(format!("{path}.prefix"), e.message),
        Ok(_) if s3.prefix.starts_with('/') => errors.add(
            format!("{path}.prefix"),
            "must not start with '/' (S3 keys have no leading slash)",
        ),
        Ok(_) if s3.prefix.contains("//") => {
            errors.add(format!("{path}.prefix"), "must not contain '//'")
        }
        Ok(_) => {}
    }
}

fn check_url(value: &str, path: &str, errors: &mut Errors) {
    match url::Url::parse(value) {
        Err(e) => errors.add(path, format!("not a URL: {e}")),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            errors.add(path, "must be an http or https URL")
        }
        Ok(u) if u.host_str().is_none() => errors.add(path, "must name a host"),
        Ok(u) if u.query().is_some() || u.fragment().is_some() => {
            errors.add(path, "must not have a query or fragment")
        }
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            errors.add(path, "must not carry credentials: use auth with a Secret")
        }
        Ok(_) => {}
    }
}

fn validate_workers(workers: &WorkersSpec, errors: &mut Errors) {
    for (i, env) in workers.env.iter().enumerate() {
        if RESERVED_ENV.contains(&env.name.as_str()) {
            errors.add(
                format!("spec.workers.env[{i}].name"),
                format!(
                    "{} is set by logsub (the worker's identity and logs)",
                    env.name
                ),
            );
        }
    }
    let batch = &workers.batch;
    if !(MIN_BATCH_BYTES..=MAX_BATCH_BYTES).contains(&batch.max_bytes.0) {
        errors.add(
            "spec.workers.batch.maxBytes",
            "must be between 1Ki and 100Mi",
        );
    }
    let wait = std::time::Duration::from(batch.max_wait);
    if batch.max_wait.is_negative() || wait.is_zero() || wait > MAX_BATCH_WAIT {
        errors.add(
            "spec.workers.batch.maxWait",
            "must be more than 0s and at most 5m",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_patterns() {
        let cases = [
            ("", Ok(())),
            ("ERROR", Ok(())),
            ("?ERROR ?WARN -DEBUG", Ok(())),
            (r#""disk full""#, Ok(())),
            (r#"{ $.level = "error" && $.latency > 100 }"#, Ok(())),
            (r#"{ ($.a = 1) || ($.b = "x}") }"#, Ok(())),
            ("[ip, user, verb, status=5*, size]", Ok(())),
            (r#"[w1 = "a\"]", w2]"#, Ok(())),
            ("[ip, user", Err("unclosed '['")),
            ("{ $.a = 1 ", Err("unclosed '{'")),
            ("ip]", Err("unbalanced ']'")),
            ("[a}", Err("unbalanced '}'")),
            (r#""open"#, Err("unterminated quoted term")),
        ];
        for (pattern, want) in cases {
            assert_eq!(
                check_filter_pattern(pattern),
                want.map_err(str::to_owned),
                "{pattern}"
            );
        }
    }

    #[test]
    fn index_names() {
        let cases = [
            ("cwl-2026.11.25", true),
            ("logs-aws.vpcflow-default", true),
            ("CWL", false),
            ("cwl/x", false),
            ("a b", false),
            ("_x", false),
            ("-x", false),
            ("..", false),
            ("a:b", false),
            ("", false),
        ];
        for (name, ok) in cases {
            assert_eq!(check_index_name(name).is_ok(), ok, "{name}");
        }
    }
}

#[cfg(test)]
mod spec_tests {
    use crate::api::LogSubscriptionSpec;

    const BASE: &str = r#"
source:
  logGroups: {names: ["/aws/vpc/flow"]}
  roleArn: arn:aws:iam::123456789012:role/r
stream: {existing: {name: s}}
sink:
  elasticsearch: {endpoint: "http://127.0.0.1:9200", index: "cwl-%Y.%m.%d"}
"#;

    /// Applies `patch` (a YAML object merged into BASE at the top level, one level deep).
    fn spec(patch: &str) -> LogSubscriptionSpec {
        let mut base: serde_json::Value = serde_saphyr::from_str(BASE).unwrap();
        let patch: serde_json::Value = serde_saphyr::from_str(patch).unwrap();
        if let Some(patch) = patch.as_object() {
            for (key, value) in patch {
                match (base.get_mut(key), value) {
                    (Some(serde_json::Value::Object(b)), serde_json::Value::Object(p))
                        if key != "sink" && key != "stream" =>
                    {
                        b.extend(p.clone())
                    }
                    _ => {
                        base[key] = value.clone();
                    }
                }
            }
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn table() {
        let cases: &[(&str, &str)] = &[
            ("{}", ""),
            (
                r#"{source: {logGroups: {pattern: "^/aws/(lambda"}}}"#,
                "spec.source.logGroups.pattern: not a valid regular expression",
            ),
            (
                r#"{source: {logGroups: {}}}"#,
                "spec.source.logGroups: at least one of names, prefix or pattern",
            ),
            (
                r#"{source: {logGroups: {names: [a, a]}}}"#,
                r#"spec.source.logGroups.names: "a" is listed twice"#,
            ),
            (
                r#"{source: {filterPattern: "[ip, user"}}"#,
                "spec.source.filterPattern: unclosed '['",
            ),
            (
                r#"{source: {rescanInterval: 10s}}"#,
                "spec.source.rescanInterval: must be at least 30s",
            ),
            (
                r#"{stream: {existing: {name: a, arn: b}}}"#,
                "spec.stream.existing: exactly one of name or arn",
            ),
            (
                r#"{stream: {managed: {}}}"#,
                "spec.stream.managed: exactly one of shardCount or onDemand",
            ),
            (
                r#"{stream: {existing: {name: a}, managed: {shardCount: 1}}}"#,
                "spec.stream: exactly one of existing or managed",
            ),
            (
                r#"{transforms: [{vpcFlowLog: {fields: [version, srcaddr, bogus]}}]}"#,
                r#"spec.transforms[0].vpcFlowLog.fields: unknown flow log field "bogus""#,
            ),
            (
                r#"{transforms: [{vpcFlowLog: {fields: [srcaddr, srcaddr]}}]}"#,
                r#"spec.transforms[0].vpcFlowLog.fields: "srcaddr" is listed twice"#,
            ),
            (
                r#"{transforms: [{json: {}}, {json: {}}]}"#,
                "spec.transforms[1]: json is listed twice",
            ),
            (
                r#"{sink: {elasticsearch: {endpoint: "http://h:9200", index: "cwl-%y"}}}"#,
                "spec.sink.elasticsearch.index: unknown placeholder %y",
            ),
            (
                r#"{sink: {elasticsearch: {endpoint: "http://h:9200", index: "CWL-%Y"}}}"#,
                "must be lowercase",
            ),
            (
                r#"{sink: {elasticsearch: {endpoint: "http://h:9200", index: "a", dataStream: "b"}}}"#,
                "spec.sink.elasticsearch: exactly one of index or dataStream",
            ),
            (
                r#"{sink: {elasticsearch: {endpoint: "http://h:9200", dataStream: "logs-%Y"}}}"#,
                "spec.sink.elasticsearch.dataStream: a data stream name is not a template",
            ),
            (
                r#"{sink: {elasticsearch: {endpoint: "ftp://h", index: a}}}"#,
                "spec.sink.elasticsearch.endpoint: must be an http or https URL",
            ),
            (
                r#"{sink: {elasticsearch: {endpoint: "https://u:p@h", index: a}}}"#,
                "must not carry credentials",
            ),
            (
                r#"{sink: {elasticsearch: {endpoint: "https://h", index: a, deadLetter: {index: "Bad"}}}}"#,
                "spec.sink.elasticsearch.deadLetter.index",
            ),
            (
                // The workers could not read it: not a name template.
                r#"{sink: {elasticsearch: {endpoint: "https://h", index: a, deadLetter: {index: "dead-{name}"}}}}"#,
                "spec.sink.elasticsearch.deadLetter.index: unknown placeholder {name}",
            ),
            (
                r#"{sink: {s3: {bucket: logs, prefix: "{logStream}/%Y/"}}}"#,
                "spec.sink.s3.prefix: unknown placeholder {logStream}",
            ),
            (
                r#"{sink: {s3: {bucket: logs, prefix: "/{logGroup}/"}}}"#,
                "spec.sink.s3.prefix: must not start with '/'",
            ),
            (
                r#"{sink: {s3: {bucket: logs, prefix: "{logGroup}/year=%Y/month=%m/"}}}"#,
                "",
            ),
            (
                r#"{sink: {s3: {bucket: logs, endpoint: "not a url"}}}"#,
                "spec.sink.s3.endpoint: not a URL",
            ),
            (
                r#"{workers: {batch: {maxBytes: 200Mi}}}"#,
                "spec.workers.batch.maxBytes: must be between 1Ki and 100Mi",
            ),
            (
                r#"{workers: {batch: {maxWait: 0s}}}"#,
                "spec.workers.batch.maxWait: must be more than 0s",
            ),
            (r#"{workers: {batch: {maxWait: 10m}}}"#, "at most 5m"),
        ];
        for (patch, want) in cases {
            let result = spec(patch).validate();
            match (result, want.is_empty()) {
                (Ok(()), true) => {}
                (Ok(()), false) => panic!("{patch}: accepted, want an error containing {want:?}"),
                (Err(e), true) => panic!("{patch}: rejected with {e}"),
                (Err(e), false) => assert!(
                    e.to_string().contains(want),
                    "{patch}: got {e}, want {want:?}"
                ),
            }
        }
    }

    #[test]
    fn every_problem_is_reported() {
        let s = spec(
            r#"{source: {rescanInterval: 1s, filterPattern: "{"}, workers: {batch: {maxWait: 0s}}}"#,
        );
        let errors = s.validate().unwrap_err();
        assert_eq!(errors.0.len(), 3, "{errors}");
    }
}
