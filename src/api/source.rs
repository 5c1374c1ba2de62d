use kube::KubeSchema;
use kube::core::Duration;
use serde::{Deserialize, Serialize};

/// Which log groups to subscribe, and the subscription filter put on each.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    /// The log groups to subscribe: any mix of exact names, a name prefix and a
    /// regular expression, minus the exclusions.
    pub log_groups: LogGroupSelector,

    /// CloudWatch Logs filter pattern that selects which events are sent, in the
    /// CloudWatch Logs filter pattern syntax (terms, `{ $.field = value }` JSON
    /// patterns, or space-delimited `[ip, user, ...]` patterns whose named fields
    /// become document fields). Empty sends every event.
    #[serde(default)]
    #[schemars(length(max = 1024))]
    pub filter_pattern: String,

    /// ARN of the IAM role CloudWatch Logs assumes to put records into the stream
    /// (trust `logs.amazonaws.com`, allow `kinesis:PutRecord`).
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}$"))]
    pub role_arn: String,

    /// How CloudWatch Logs spreads events over the stream's shards: `ByLogStream`
    /// keeps each log stream's events in one shard, in order; `Random` spreads
    /// them evenly.
    #[serde(default)]
    pub distribution: Distribution,

    /// How often the log group selection is resolved again, so log groups created
    /// later are subscribed without any change here. A Go duration, at least `30s`.
    #[serde(default = "default_rescan_interval")]
    #[schemars(schema_with = "duration_schema")]
    pub rescan_interval: Duration,
}

fn default_rescan_interval() -> Duration {
    std::time::Duration::from_secs(300).into()
}

/// A Go-style duration string (`90s`, `5m`, `1h30m`), checked at admission.
pub(crate) fn duration_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$",
    })
}

/// Log groups chosen by name, prefix and/or pattern. A log group is selected when
/// any of `names`, `prefix` or `pattern` matches it and no `exclude` entry does.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "(has(self.names) && size(self.names) > 0) || has(self.prefix) || has(self.pattern)"
).message("at least one of names, prefix or pattern must select log groups"))]
pub struct LogGroupSelector {
    /// Exact log group names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 1000),
        inner(length(min = 1, max = 512), regex(pattern = r"^[\.\-_/#A-Za-z0-9]+$"))
    )]
    pub names: Vec<String>,

    /// Every log group whose name starts with this prefix, e.g. `/aws/lambda/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^[\.\-_/#A-Za-z0-9]+$"))]
    pub prefix: Option<String>,

    /// Every log group whose name matches this regular expression (Rust `regex`
    /// syntax, unanchored unless you anchor it), e.g. `^/aws/lambda/prod-`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub pattern: Option<String>,

    /// Log groups never subscribed, even when selected above: exact names or globs
    /// where `*` matches any run of characters, e.g. `/aws/lambda/logsub-*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 512)))]
    pub exclude: Vec<String>,
}

/// How CloudWatch Logs distributes events over the stream's shards.
#[derive(
    Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum Distribution {
    /// Events of one log stream go to one shard, in order.
    #[default]
    ByLogStream,
    /// Events are spread evenly over the shards.
    Random,
}

impl LogGroupSelector {
    /// Whether `name` is selected: matched by a name, the prefix or the pattern,
    /// and by no exclusion. `pattern` must be the compiled `self.pattern`.
    pub fn selects(&self, name: &str, pattern: Option<&regex::Regex>) -> bool {
        let included = self.names.iter().any(|n| n == name)
            || self.prefix.as_deref().is_some_and(|p| name.starts_with(p))
            || pattern.is_some_and(|re| re.is_match(name));
        included && !self.exclude.iter().any(|glob| glob_matches(glob, name))
    }
}

/// `*` matches any run of characters (including `/`); everything else is literal.
pub(crate) fn glob_matches(glob: &str, name: &str) -> bool {
    let mut parts = glob.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let cases = [
            ("/aws/lambda/x", "/aws/lambda/x", true),
            ("/aws/lambda/x", "/aws/lambda/xy", false),
            ("/aws/lambda/*", "/aws/lambda/prod-a", true),
            ("/aws/lambda/*", "/aws/lambda/", true),
            ("/aws/lambda/*", "/aws/ecs/a", false),
            ("*-test", "/aws/lambda/a-test", true),
            ("*-test", "/aws/lambda/a-test-2", false),
            ("/a/*/c*", "/a/b/b/cd", true),
            ("/a/*/c*", "/a/b/d", false),
            ("*", "anything", true),
            ("a*b*a", "aba", true),
            ("a*b*a", "ab", false),
        ];
        for (glob, name, want) in cases {
            assert_eq!(glob_matches(glob, name), want, "{glob} vs {name}");
        }
    }

    proptest::proptest! {
        #[test]
        fn a_star_matches_any_middle(a in "[^*]{0,8}", x in "[^*]{0,8}", b in "[^*]{0,8}") {
            let glob = format!("{a}*{b}");
            let name = format!("{a}{x}{b}");
            proptest::prop_assert!(glob_matches(&glob, &name));
            proptest::prop_assert!(glob_matches(&name, &name), "a name without stars matches itself");
        }
    }

    #[test]
    fn selection_with_exclusions() {
        let selector = LogGroupSelector {
            names: vec!["/aws/vpc/flow".into()],
            prefix: Some("/aws/lambda/".into()),
            pattern: Some("^/app/prod-".into()),
            exclude: vec!["/aws/lambda/logsub-*".into()],
        };
        let re = regex::Regex::new("^/app/prod-").unwrap();
        let cases = [
            ("/aws/vpc/flow", true),
            ("/aws/vpc/flow2", false),
            ("/aws/lambda/orders", true),
            ("/aws/lambda/logsub-worker", false),
            ("/app/prod-api", true),
            ("/app/dev-api", false),
        ];
        for (name, want) in cases {
            assert_eq!(selector.selects(name, Some(&re)), want, "{name}");
        }
    }
}
