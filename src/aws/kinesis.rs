//! The narrow part of Kinesis the worker uses: shard discovery with paging,
//! shard iterators and GetRecords, with errors classified once.

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;

use super::{AwsError, classify};
use crate::worker::checkpoint::watermark::SequenceNumber;

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
