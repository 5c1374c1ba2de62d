//! The narrow part of Kinesis the worker uses: shard discovery with paging,
//! shard iterators and GetRecords, with errors classified once.

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;

use super::{AwsError, classify};
use crate::contract::SequenceNumber;

/// A shard as ListShards reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Shard id, e.g. `shardId-000000000000`.
    pub id: String,
    /// The parent and, after a merge, the adjacent parent.
    pub parents: Vec<String>,
    /// Whether the shard is closed (split or merged): it has an ending sequence number.
    pub closed: bool,
}

/// Where to start reading a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest record still retained.
    TrimHorizon,
    /// Only records written from now on.
    Latest,
    /// Records written at or after this time (Unix milliseconds).
    AtTimestamp(i64),
    /// Right after a checkpointed record.
    After(SequenceNumber),
}

/// One record read.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Its sequence number.
    pub sequence: SequenceNumber,
    /// Its data (for CloudWatch Logs, a gzip'd payload).
    pub data: Vec<u8>,
    /// When Kinesis received it (Unix milliseconds), when it says.
    pub arrival_millis: Option<i64>,
}

/// One GetRecords answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    /// The records, in order.
    pub records: Vec<Record>,
    /// Where to read next; `None` once a closed shard is read to its end.
    pub next_iterator: Option<String>,
    /// How far behind the tip the reader is.
    pub millis_behind_latest: Option<i64>,
    /// The children of a shard read to its end.
    pub child_shards: Vec<String>,
}

/// A Kinesis data stream, by ARN.
#[derive(Clone, Debug)]
pub struct Stream {
    client: Client,
    arn: String,
}

impl Stream {
    /// The stream with this ARN.
    pub fn new(client: Client, arn: impl Into<String>) -> Stream {
        Stream {
            client,
            arn: arn.into(),
        }
    }

    /// Every shard, open and closed, following NextToken pages of `page_size`.
    pub async fn shards(&self, page_size: i32) -> Result<Vec<Shard>, AwsError> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // A paged request names the stream only on its first call.
            let request = match &token {
                None => self.client.list_shards().stream_arn(&self.arn),
                Some(t) => self.client.list_shards().next_token(t),
            };
            let page = request
                .max_results(page_size)
                .send()
                .await
                .map_err(classify)?;
            for shard in page.shards() {
                let parents = [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
                    .into_iter()
                    .flatten()
                    .map(str::to_owned)
                    .collect();
                let closed = shard
                    .sequence_number_range()
                    .is_some_and(|r| r.ending_sequence_number().is_some());
                shards.push(Shard {
                    id: shard.shard_id().to_owned(),
                    parents,
                    closed,
                });
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(shards);
            }
        }
    }

    /// A shard iterator from `start`.
    pub async fn iterator(&self, shard: &str, start: &StartPosition) -> Result<String, AwsError> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_arn(&self.arn)
            .shard_id(shard);
        let request = match start {
            StartPosition::TrimHorizon => {
                request.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            StartPosition::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            StartPosition::AtTimestamp(millis) => request
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(DateTime::from_millis(*millis)),
            StartPosition::After(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq.as_str()),
        };
        let answer = request.send().await.map_err(classify)?;
        answer
            .shard_iterator()
            .map(str::to_owned)
            .ok_or_else(|| AwsError::permanent("GetShardIterator returned no iterator"))
    }

    /// Up to `limit` records from `iterator`.
    pub async fn records(&self, iterator: &str, limit: i32) -> Result<Page, AwsError> {
        let answer = self
            .client
            .get_records()
            .stream_arn(&self.arn)
            .shard_iterator(iterator)
            .limit(limit)
            .send()
            .await
            .map_err(classify)?;
        let records = answer
            .records()
            .iter()
            .map(|r| {
                let sequence = SequenceNumber::parse(r.sequence_number())
                    .map_err(|e| AwsError::permanent(e.to_string()))?;
                Ok(Record {
                    sequence,
                    data: r.data().as_ref().to_vec(),
                    arrival_millis: r
                        .approximate_arrival_timestamp()
                        .and_then(|t| t.to_millis().ok()),
                })
            })
            .collect::<Result<_, AwsError>>()?;
        Ok(Page {
            records,
            next_iterator: answer.next_shard_iterator().map(str::to_owned),
            millis_behind_latest: answer.millis_behind_latest(),
            child_shards: answer
                .child_shards()
                .iter()
                .map(|c| c.shard_id().to_owned())
                .collect(),
        })
    }
}

/// A stream as the controller sees it (DescribeStreamSummary).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// Its name.
    pub name: String,
    /// Its ARN.
    pub arn: String,
    /// CREATING, ACTIVE, UPDATING or DELETING.
    pub status: StreamStatus,
    /// Open shards.
    pub open_shards: i32,
    /// On-demand capacity (else provisioned).
    pub on_demand: bool,
    /// How long records stay readable.
    pub retention_hours: i32,
    /// When it was created (Unix milliseconds): with the ARN, it tells a
    /// stream from one deleted and created again under the same name.
    pub created_millis: Option<i64>,
}

/// The lifecycle state of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamStatus {
    /// Being created: not readable or writable yet.
    Creating,
    /// Usable.
    Active,
    /// Usable while its shards, mode or retention change.
    Updating,
    /// Going away.
    Deleting,
}

impl StreamStatus {
    /// Whether records can be put and read.
    pub fn usable(self) -> bool {
        matches!(self, StreamStatus::Active | StreamStatus::Updating)
    }
}

/// How a managed stream's capacity is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capacity {
    /// Provisioned with this many shards.
    Shards(i32),
    /// On demand.
    OnDemand,
}

/// The streams of one account and region, for the controller: look up, create,
/// resize and delete.
#[derive(Clone, Debug)]
pub struct Streams {
    client: Client,
}

impl Streams {
    /// Through `client`.
    pub fn new(client: Client) -> Streams {
        Streams { client }
    }

    /// The stream named `name`, or with ARN `arn`; `None` when there is none.
    pub async fn describe(
        &self,
        name: Option<&str>,
        arn: Option<&str>,
    ) -> Result<Option<StreamInfo>, AwsError> {
        let answer = self
            .client
            .describe_stream_summary()
            .set_stream_name(name.map(str::to_owned))
            .set_stream_arn(arn.map(str::to_owned))
            .send()
            .await
            .map_err(classify);
        let summary = match answer {
            Ok(answer) => answer,
            Err(e) if e.class == super::ErrorClass::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(s) = summary.stream_description_summary() else {
            return Err(AwsError::permanent(
                "DescribeStreamSummary returned no summary",
            ));
        };
        use aws_sdk_kinesis::types::{StreamMode, StreamStatus as Aws};
        let status = match s.stream_status() {
            Aws::Creating => StreamStatus::Creating,
            Aws::Active => StreamStatus::Active,
            Aws::Updating => StreamStatus::Updating,
            _ => StreamStatus::Deleting,
        };
        Ok(Some(StreamInfo {
            name: s.stream_name().to_owned(),
            arn: s.stream_arn().to_owned(),
            status,
            open_shards: s.open_shard_count(),
            on_demand: s
                .stream_mode_details()
                .is_some_and(|m| *m.stream_mode() == StreamMode::OnDemand),
            retention_hours: s.retention_period_hours(),
            created_millis: s.stream_creation_timestamp().to_millis().ok(),
        }))
    }

    /// Creates the stream `name` with `capacity`, tagged with `tags`.
    pub async fn create(
        &self,
        name: &str,
        capacity: Capacity,
        tags: &[(&str, &str)],
    ) -> Result<(), AwsError> {
        use aws_sdk_kinesis::types::{StreamMode, StreamModeDetails};
        let (shards, mode) = match capacity {
            Capacity::Shards(n) => (Some(n), StreamMode::Provisioned),
            Capacity::OnDemand => (None, StreamMode::OnDemand),
        };
        let mode = StreamModeDetails::builder()
            .stream_mode(mode)
            .build()
            .map_err(|e| AwsError::permanent(e.to_string()))?;
        let mut request = self
            .client
            .create_stream()
            .stream_name(name)
            .set_shard_count(shards)
            .stream_mode_details(mode);
        for (k, v) in tags {
            request = request.tags(*k, *v);
        }
        request.send().await.map_err(classify)?;
        Ok(())
    }

    /// The stream's tags.
    pub async fn tags(&self, arn: &str) -> Result<Vec<(String, String)>, AwsError> {
        let answer = self
            .client
            .list_tags_for_stream()
            .stream_arn(arn)
            .send()
            .await
            .map_err(classify)?;
        Ok(answer
            .tags()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().unwrap_or_default().to_owned()))
            .collect())
    }

    /// Switches the stream to `capacity`: the mode first, then the shard count.
    pub async fn resize(&self, info: &StreamInfo, capacity: Capacity) -> Result<(), AwsError> {
        use aws_sdk_kinesis::types::{ScalingType, StreamMode, StreamModeDetails};
        let want_on_demand = capacity == Capacity::OnDemand;
        if info.on_demand != want_on_demand {
            let mode = if want_on_demand {
                StreamMode::OnDemand
            } else {
                StreamMode::Provisioned
            };
            let details = StreamModeDetails::builder()
                .stream_mode(mode)
                .build()
                .map_err(|e| AwsError::permanent(e.to_string()))?;
            self.client
                .update_stream_mode()
                .stream_arn(&info.arn)
                .stream_mode_details(details)
                .send()
                .await
                .map_err(classify)?;
            return Ok(());
        }
        if let Capacity::Shards(n) = capacity {
            self.client
                .update_shard_count()
                .stream_arn(&info.arn)
                .target_shard_count(n)
                .scaling_type(ScalingType::UniformScaling)
                .send()
                .await
                .map_err(classify)?;
        }
        Ok(())
    }

    /// Sets how long records stay readable.
    pub async fn set_retention(&self, info: &StreamInfo, hours: i32) -> Result<(), AwsError> {
        if hours > info.retention_hours {
            self.client
                .increase_stream_retention_period()
                .stream_arn(&info.arn)
                .retention_period_hours(hours)
                .send()
                .await
                .map_err(classify)?;
        } else if hours < info.retention_hours {
            self.client
                .decrease_stream_retention_period()
                .stream_arn(&info.arn)
                .retention_period_hours(hours)
                .send()
                .await
                .map_err(classify)?;
        }
        Ok(())
    }

    /// Deletes the stream; one already gone is fine.
    pub async fn delete(&self, arn: &str) -> Result<(), AwsError> {
        super::gone_is_ok(
            self.client
                .delete_stream()
                .stream_arn(arn)
                .enforce_consumer_deletion(true)
                .send()
                .await
                .map_err(classify),
        )
    }
}
