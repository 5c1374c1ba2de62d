//! The first stage of a reconcile: whether the spec can be acted on at all,
//! and where its AWS calls go.

use super::{Aws, Scope};
use crate::api::LogSubscription;

/// A spec that cannot be acted on.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    /// What is wrong, for people.
    pub message: String,
    /// The region, when one is known: what was put there before comes off.
    pub region: Option<String>,
}

/// The scope of `lsub`'s AWS calls, once its names and spec are valid and a
/// region is known (its own, else the controller's: never a guess).
pub fn validate(lsub: &LogSubscription, aws: &Aws) -> Result<Scope, Invalid> {
    let region = aws.region(lsub.spec.region.as_deref());
    match (lsub.validate_names().and(lsub.spec.validate()), region) {
        (Err(errors), region) => Err(Invalid {
            message: errors.to_string(),
            region,
        }),
        (Ok(()), None) => Err(Invalid {
            message: "no AWS region: set spec.region, or the controller's --region (AWS_REGION)"
                .to_owned(),
            region: None,
        }),
        (Ok(()), Some(region)) => Ok(Scope::of(lsub, region)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws(region: Option<&str>) -> Aws {
        let mut config = aws_config::SdkConfig::builder();
        if let Some(region) = region {
            config = config.region(aws_config::Region::new(region.to_owned()));
        }
        Aws::new(
            config.build(),
            None,
            crate::aws::CallCounter(Default::default()),
        )
    }

    fn lsub(region: Option<&str>, stream: serde_json::Value) -> LogSubscription {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "logsub.io/v1alpha1",
            "kind": "LogSubscription",
            "metadata": {"name": "app", "namespace": "team-a"},
            "spec": {
                "region": region,
                "source": {"logGroups": {"names": ["/a"]}, "roleArn": "arn:aws:iam::1:role/r"},
                "stream": stream,
                "sink": {"s3": {"bucket": "b"}},
            },
        }))
        .expect("a LogSubscription")
    }

    #[test]
    fn a_region_is_the_specs_else_the_controllers_and_never_guessed() {
        let existing = serde_json::json!({"existing": {"name": "s"}});
        let scope = validate(
            &lsub(Some("eu-west-1"), existing.clone()),
            &aws(Some("us-east-1")),
        );
        assert_eq!(scope.expect("valid").region, "eu-west-1");
        let scope = validate(&lsub(None, existing.clone()), &aws(Some("us-east-1")));
        assert_eq!(scope.expect("valid").region, "us-east-1");
        let invalid = validate(&lsub(None, existing), &aws(None)).expect_err("no region");
        assert!(invalid.message.contains("no AWS region"), "{invalid}");
        assert_eq!(invalid.region, None);
    }

    #[test]
    fn an_invalid_spec_keeps_its_region_so_that_its_filters_come_off() {
        let both = serde_json::json!({"existing": {"name": "s"}, "managed": {"shardCount": 1}});
        let invalid = validate(&lsub(None, both), &aws(Some("us-east-1"))).expect_err("invalid");
        assert_eq!(invalid.region.as_deref(), Some("us-east-1"));
        assert!(invalid.message.contains("stream"), "{invalid}");
    }
}
