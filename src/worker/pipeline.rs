//! One shard's bookkeeping between its reader and the sink driver: records in,
//! encoded parts out, acknowledgements back, and the checkpoint they allow.
//! No I/O: the shard task moves parts and acks, this decides what they mean.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;

use super::checkpoint::watermark::{SequenceNumber, Watermark, WatermarkError};
use super::decode::cloudwatch::Limits;
use super::health::ShardCounters;
use super::process::{DeadLetter, Outcome, process};
use super::sink::batch::{Ack, Acked, Encoded, Part};
use super::sink::{EncodeError, Sink};
use super::transform::Compiled;
use crate::aws::kinesis::Record;
use crate::telemetry::{ErrorLabels, ShardLabels, WorkerMetrics};
use crate::time::now_millis;

/// Why a shard's pipeline cannot go on (a bug, not bad data: bad data is
/// dead-lettered).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Records or acks out of order.
    #[error(transparent)]
    Watermark(#[from] WatermarkError),
    /// Not even the dead letter of a record could be encoded.
    #[error("dead letter of record {sequence}: {source}")]
    Encode {
        /// The record.
        sequence: SequenceNumber,
        /// Why.
        source: EncodeError,
    },
}

/// How a shard's documents are cut for the driver.
#[derive(Clone, Copy, Debug)]
pub struct PartLimits {
    /// Most documents in a part (the batch's limit).
    pub max_docs: usize,
    /// Most bytes in a part (the batch's limit).
    pub max_bytes: usize,
    /// Largest inflated payload accepted.
    pub decode: Limits,
}

/// The pipeline state of one shard held by this worker.
pub struct ShardPipeline {
    shard: Arc<str>,
    labels: ShardLabels,
    watermark: Watermark,
    acks: UnboundedSender<Acked>,
    limits: PartLimits,
    /// Delivery counters published on the lease.
    pub counters: ShardCounters,
}

impl ShardPipeline {
    /// A pipeline resuming after `checkpoint`; acks for its parts come back on `acks`.
    pub fn new(
        shard: &str,
        checkpoint: Option<SequenceNumber>,
        acks: UnboundedSender<Acked>,
        limits: PartLimits,
        counters: ShardCounters,
    ) -> ShardPipeline {
        ShardPipeline {
            shard: Arc::from(shard),
            labels: WorkerMetrics::shard(shard),
            watermark: Watermark::new(checkpoint),
            acks,
            limits,
            counters,
        }
    }

    /// Decodes, transforms and encodes `records`, registers each in the
    /// watermark with the number of parts it became, and appends the parts to `out`.
    pub fn records<S: Sink>(
        &mut self,
        records: &[Record],
        transforms: &[Compiled],
        sink: &S,
        metrics: &WorkerMetrics,
        out: &mut VecDeque<Part>,
    ) -> Result<(), PipelineError> {
        for record in records {
            metrics.records_read.get_or_create(&self.labels).inc();
            metrics
                .bytes_read
                .get_or_create(&self.labels)
                .inc_by(record.data.len() as u64);
            let encoded = self.encode(record, transforms, sink, metrics)?;
            let parts = if encoded.is_empty() {
                Vec::new()
            } else {
                encoded.split(self.limits.max_docs, self.limits.max_bytes)
            };
            self.watermark.read(record.sequence.clone(), parts.len())?;
            out.extend(parts.into_iter().map(|p| {
                let ack = Ack {
                    to: self.acks.clone(),
                    shard: self.shard.clone(),
                    sequence: record.sequence.clone(),
                };
                Part::new(p, Some(ack))
            }));
        }
        Ok(())
    }

    fn encode<S: Sink>(
        &mut self,
        record: &Record,
        transforms: &[Compiled],
        sink: &S,
        metrics: &WorkerMetrics,
    ) -> Result<Encoded, PipelineError> {
        let dead = match process(&self.shard, record, transforms, self.limits.decode) {
            Outcome::Control => {
                metrics.control_messages.inc();
                return Ok(Encoded::default());
            }
            Outcome::Documents(docs) => {
                metrics.events_decoded.inc_by(docs.len() as u64);
                let mut encoded = Encoded::default();
                let result = docs.iter().enumerate().try_for_each(|(i, doc)| {
                    encoded.push(|out| sink.encode(doc, out))?;
                    if i == 0 {
                        // The first document's size sizes the rest: one allocation.
                        encoded.reserve(encoded.byte_len() * docs.len() * 5 / 4);
                    }
                    Ok::<(), EncodeError>(())
                });
                match result {
                    Ok(()) => return Ok(encoded),
                    Err(e) => DeadLetter::new(&self.shard, record, e.into()),
                }
            }
            Outcome::Rejected(dead) => dead,
        };
        metrics
            .errors
            .get_or_create(&ErrorLabels::processing(dead.error.category()))
            .inc();
        self.counters.health.dead_lettered += 1;
        tracing::warn!(shard = %self.shard, sequence = %record.sequence, error = %dead.error, "record dead-lettered");
        let mut encoded = Encoded::default();
        encoded
            .push(|out| sink.encode(&dead.document(now_millis()), out))
            .map_err(|source| PipelineError::Encode {
                sequence: record.sequence.clone(),
                source,
            })?;
        Ok(encoded)
    }

    /// A part came back delivered.
    pub fn acked(&mut self, acked: &Acked) -> Result<(), PipelineError> {
        self.watermark.ack(&acked.sequence)?;
        self.counters.delivered(acked.documents, now_millis());
        Ok(())
    }

    /// The sequence number every record up to which is delivered.
    pub fn checkpoint(&self) -> Option<&SequenceNumber> {
        self.watermark.checkpoint()
    }

    /// Records read and not yet delivered.
    pub fn in_flight(&self) -> usize {
        self.watermark.in_flight()
    }

    /// Metric labels of the shard.
    pub fn labels(&self) -> &ShardLabels {
        &self.labels
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;
    use crate::worker::decode::cloudwatch::tests::gzip;
    use crate::worker::sink::Batch;
    use crate::worker::sink::stdout::Stdout;

    fn record(n: u64, data: Vec<u8>) -> Record {
        Record {
            sequence: SequenceNumber::parse(&n.to_string()).unwrap(),
            data,
        }
    }

    fn payload(events: usize) -> Vec<u8> {
        let events: Vec<String> = (0..events)
            .map(|i| format!(r#"{{"id":"{i}","timestamp":1418530010000,"message":"m{i}"}}"#))
            .collect();
        gzip(
            format!(
                r#"{{"messageType":"DATA_MESSAGE","owner":"1","logGroup":"g","logStream":"s","subscriptionFilters":["f"],"logEvents":[{}]}}"#,
                events.join(",")
            )
            .as_bytes(),
        )
    }

    #[test]
    fn records_become_parts_and_the_checkpoint_follows_the_acks() {
        let (tx, mut acks) = mpsc::unbounded_channel();
        let limits = PartLimits {
            max_docs: 2,
            max_bytes: 1 << 20,
            decode: Limits::default(),
        };
        let mut p = ShardPipeline::new("s", None, tx, limits, ShardCounters::default());
        let sink = Stdout::to(Vec::new());
        let metrics = WorkerMetrics::default();
        let control = br#"{"messageType":"CONTROL_MESSAGE","owner":"CloudwatchLogs","logGroup":"","logStream":"","subscriptionFilters":[],"logEvents":[]}"#;
        let records = [
            record(1, payload(3)),
            record(2, gzip(control)),
            record(3, b"corrupt".to_vec()),
        ];
        let mut parts = VecDeque::new();
        p.records(&records, &[], &sink, &metrics, &mut parts)
            .unwrap();
        let sizes: Vec<usize> = parts.iter().map(|p| p.encoded().len()).collect();
        assert_eq!(
            sizes,
            [2, 1, 1],
            "3 events in parts of 2, and a dead letter"
        );
        assert_eq!(p.checkpoint(), None);
        assert_eq!(p.counters.health.dead_lettered, 1);
        // Deliver the last two parts first: nothing moves until the first is done.
        let mut batch_of = |part: Part| {
            let mut b = Batch::default();
            b.push(part);
            b.settle(&[]);
            let acked = acks.try_recv().unwrap();
            p.acked(&acked).unwrap();
            p.checkpoint().map(|s| s.to_string())
        };
        let first = parts.pop_front().unwrap();
        let second = parts.pop_front().unwrap();
        let dead = parts.pop_front().unwrap();
        assert_eq!(batch_of(dead), None);
        assert_eq!(batch_of(second), None);
        assert_eq!(batch_of(first).as_deref(), Some("3"));
        assert_eq!(p.counters.health.delivered, 4);
        assert_eq!(p.in_flight(), 0);
    }
}
