//! The narrow part of CloudWatch Logs the controller uses: the log groups
//! (with paging), the subscription filters on one, and putting and deleting
//! ours, with errors classified once.

use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::types::Distribution as AwsDistribution;

use super::{AwsError, classify};
use crate::api::Distribution;

/// A subscription filter as CloudWatch Logs describes it, or as we want it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// Its name.
    pub name: String,
    /// The filter pattern.
    pub pattern: String,
    /// Where it sends events (the stream's ARN).
    pub destination_arn: String,
    /// The role CloudWatch Logs assumes to send them.
    pub role_arn: Option<String>,
    /// How events spread over the shards.
    pub distribution: Option<Distribution>,
}

/// A log group and the subscription filters on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The log group's name.
    pub name: String,
    /// Its filters, ours among them or not.
    pub filters: Vec<Filter>,
}

/// CloudWatch Logs in one account and region.
#[derive(Clone, Debug)]
pub struct Logs {
    client: Client,
}

impl Logs {
    /// Through `client`.
    pub fn new(client: Client) -> Logs {
        Logs { client }
    }

    /// The names of every log group, or of those starting with `prefix`, all
    /// pages of them.
    pub async fn log_groups(&self, prefix: Option<&str>) -> Result<Vec<String>, AwsError> {
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .describe_log_groups()
                .set_log_group_name_prefix(prefix.map(str::to_owned))
                .set_next_token(token)
                .send()
                .await
                .map_err(classify)?;
            names.extend(
                page.log_groups()
                    .iter()
                    .filter_map(|g| g.log_group_name().map(str::to_owned)),
            );
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(names);
            }
        }
    }

    /// A log group with its subscription filters.
    pub async fn group(&self, name: &str) -> Result<Group, AwsError> {
        let mut filters = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .describe_subscription_filters()
                .log_group_name(name)
                .set_next_token(token)
                .send()
                .await
                .map_err(classify)?;
            filters.extend(page.subscription_filters().iter().map(|f| Filter {
                name: f.filter_name().unwrap_or_default().to_owned(),
                pattern: f.filter_pattern().unwrap_or_default().to_owned(),
                destination_arn: f.destination_arn().unwrap_or_default().to_owned(),
                role_arn: f.role_arn().map(str::to_owned),
                distribution: f.distribution().map(|d| match d {
                    AwsDistribution::Random => Distribution::Random,
                    _ => Distribution::ByLogStream,
                }),
            }));
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(Group {
                    name: name.to_owned(),
                    filters,
                });
            }
        }
    }

    /// Puts `filter` on `group` (creates or replaces it: idempotent).
    pub async fn put_filter(&self, group: &str, filter: &Filter) -> Result<(), AwsError> {
        let distribution = filter.distribution.map(|d| match d {
            Distribution::Random => AwsDistribution::Random,
            Distribution::ByLogStream => AwsDistribution::ByLogStream,
        });
        self.client
            .put_subscription_filter()
            .log_group_name(group)
            .filter_name(&filter.name)
            .filter_pattern(&filter.pattern)
            .destination_arn(&filter.destination_arn)
            .set_role_arn(filter.role_arn.clone())
            .set_distribution(distribution)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Deletes the filter named `name` from `group`; one already gone is fine.
    pub async fn delete_filter(&self, group: &str, name: &str) -> Result<(), AwsError> {
        super::gone_is_ok(
            self.client
                .delete_subscription_filter()
                .log_group_name(group)
                .filter_name(name)
                .send()
                .await
                .map_err(classify),
        )
    }
}
