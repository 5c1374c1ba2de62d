//! One shard's bookkeeping between its reader and the sink driver: records in,
//! encoded parts out, acknowledgements back, and the checkpoint they allow.
//! No I/O: the shard task moves parts and acks, this decides what they mean.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::checkpoint::watermark::{SequenceNumber, Watermark, WatermarkError};
use super::decode::cloudwatch::Limits;
use super::document::{Document, LOG_GROUP, OWNER, TIMESTAMP};
use super::health::ShardCounters;
use super::process::{DeadLetter, Outcome, process};
use super::sink::batch::{Ack, Acked, Encoded, ObjectMeta, Part, Span};
use super::sink::{EncodeError, Sink};
use super::transform::Compiled;
use crate::api::UtcHour;
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
    /// For an object sink: the shard's own batching.
    objects: Option<Objects>,
    /// Delivery counters published on the lease.
    pub counters: ShardCounters,
}

/// A shard's batching for an object sink: runs of whole records, cut at the
/// limits or after `max_wait`, except where an object written before a restart
/// ended, which is where the replay must cut again.
struct Objects {
    max_wait: Duration,
    open: Option<OpenObject>,
    /// Whether objects may exist beyond the checkpoint: asked for each new
    /// object until one is not there.
    probing: bool,
    /// The record a probe was answered for, and where that object ended.
    probed: Option<(SequenceNumber, Option<SequenceNumber>)>,
}

struct OpenObject {
    encoded: Encoded,
    first: SequenceNumber,
    last: SequenceNumber,
    meta: ObjectMeta,
    opened: Instant,
    /// Where this object must end (an earlier one ended there).
    cut_at: Option<SequenceNumber>,
}

/// An object sink must be asked where the object starting at `first` ended.
#[derive(Debug, PartialEq)]
pub struct Probe {
    /// The first record of the object.
    pub first: SequenceNumber,
    /// Its key's parts.
    pub meta: ObjectMeta,
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
            objects: None,
            counters,
        }
    }

    /// Batches for an object sink: objects of whole records, at most
    /// `max_wait` old, probed for after a restart.
    pub fn cut_objects(mut self, max_wait: Duration) -> ShardPipeline {
        self.objects = Some(Objects {
            max_wait,
            open: None,
            probing: true,
            probed: None,
        });
        self
    }

    /// The answer to a [`Probe`]: where the object ended, if it exists.
    pub fn probed(&mut self, probe: &Probe, end: Option<SequenceNumber>) {
        if let Some(objects) = &mut self.objects {
            objects.probing = end.is_some();
            objects.probed = Some((probe.first.clone(), end));
        }
    }

    /// When the open object must be cut, if it may be cut by time.
    pub fn object_due(&self) -> Option<Instant> {
        let open = self.objects.as_ref()?.open.as_ref()?;
        open.cut_at
            .is_none()
            .then_some(open.opened + self.objects.as_ref()?.max_wait)
    }

    /// Cuts the open object now (its time is up, or the shard ended).
    pub fn cut_now(&mut self) -> Option<Part> {
        let open = self.objects.as_mut()?.open.take()?;
        Some(self.close(open))
    }

    fn close(&self, open: OpenObject) -> Part {
        let ack = Ack {
            to: self.acks.clone(),
            shard: self.shard.clone(),
            sequence: open.first.clone(),
        };
        let span = Span {
            shard: self.shard.clone(),
            first: open.first,
            last: open.last,
            meta: open.meta,
        };
        Part::object(open.encoded, span, Some(ack))
    }

    /// Adds a record to the shard's object; returns a probe to answer first
    /// when the record starts an object that an earlier holder may have written.
    fn object_record(
        &mut self,
        objects: &mut Objects,
        record: &Record,
        encoded: Encoded,
        meta: Option<ObjectMeta>,
        out: &mut VecDeque<Part>,
    ) -> Result<Option<Probe>, PipelineError> {
        let seq = &record.sequence;
        match (&mut objects.open, meta) {
            // Nothing to deliver and no object open: done at once.
            (None, _) if encoded.is_empty() => {
                self.watermark.read(seq.clone(), 0)?;
                return Ok(None);
            }
            (None, meta) => {
                let meta = meta.unwrap_or_default();
                let cut_at = match &objects.probed {
                    Some((first, end)) if first == seq => end.clone(),
                    _ if objects.probing => {
                        return Ok(Some(Probe {
                            first: seq.clone(),
                            meta,
                        }));
                    }
                    _ => None,
                };
                objects.open = Some(OpenObject {
                    encoded,
                    first: seq.clone(),
                    last: seq.clone(),
                    meta,
                    opened: Instant::now(),
                    cut_at,
                });
                // The object's first record holds the watermark for all of it.
                self.watermark.read(seq.clone(), 1)?;
            }
            (Some(open), _) => {
                open.encoded.append(&encoded);
                open.last = seq.clone();
                self.watermark.read(seq.clone(), 0)?;
            }
        }
        let limits = self.limits;
        let full = objects
            .open
            .as_ref()
            .is_some_and(|open| match &open.cut_at {
                Some(end) => seq >= end,
                None => {
                    open.encoded.len() >= limits.max_docs
                        || open.encoded.byte_len() >= limits.max_bytes
                }
            });
        if full && let Some(open) = objects.open.take() {
            out.push_back(self.close(open));
        }
        Ok(None)
    }

    /// Decodes, transforms and encodes records from the front of `records`
    /// until one yields parts, registers each in the watermark with the number
    /// of parts it became, and appends the parts to `out`. Stops early, leaving
    /// the record in `records`, when an object sink must first answer a [`Probe`].
    pub fn records<S: Sink>(
        &mut self,
        records: &mut VecDeque<Record>,
        transforms: &[Compiled],
        sink: &S,
        metrics: &WorkerMetrics,
        out: &mut VecDeque<Part>,
    ) -> Result<Option<Probe>, PipelineError> {
        while let Some(record) = records.pop_front() {
            let want_meta = self.objects.as_ref().is_some_and(|o| o.open.is_none());
            let (encoded, meta) = self.encode(&record, transforms, sink, metrics, want_meta)?;
            // Taken out for the call, which needs the rest of `self` too.
            if let Some(mut objects) = self.objects.take() {
                let probe = self.object_record(&mut objects, &record, encoded, meta, out);
                self.objects = Some(objects);
                if let Some(probe) = probe? {
                    // Decoded again once the probe is answered.
                    records.push_front(record);
                    return Ok(Some(probe));
                }
            } else {
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
            metrics.records_read.get_or_create(&self.labels).inc();
            metrics
                .bytes_read
                .get_or_create(&self.labels)
                .inc_by(record.data.len() as u64);
            // Decode no further ahead than the sink takes: the rest wait as
            // they came, compressed.
            if !out.is_empty() {
                break;
            }
        }
        Ok(None)
    }

    fn encode<S: Sink>(
        &mut self,
        record: &Record,
        transforms: &[Compiled],
        sink: &S,
        metrics: &WorkerMetrics,
        want_meta: bool,
    ) -> Result<(Encoded, Option<ObjectMeta>), PipelineError> {
        let dead = match process(&self.shard, record, transforms, self.limits.decode) {
            Outcome::Control => {
                metrics.control_messages.inc();
                return Ok((Encoded::default(), None));
            }
            Outcome::Documents(docs) => {
                metrics.events_decoded.inc_by(docs.len() as u64);
                let meta = if want_meta {
                    docs.first().map(object_meta)
                } else {
                    None
                };
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
                    Ok(()) => return Ok((encoded, meta)),
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
        let letter = dead.document(now_millis());
        encoded
            .push(|out| sink.encode(&letter, out))
            .map_err(|source| PipelineError::Encode {
                sequence: record.sequence.clone(),
                source,
            })?;
        Ok((encoded, want_meta.then(|| object_meta(&letter))))
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

/// An object's key parts from its first document: its hour, log group and account.
fn object_meta(doc: &Document) -> ObjectMeta {
    let text = |key: &str| doc.get(key).and_then(Value::as_str).unwrap_or_default();
    ObjectMeta {
        hour: UtcHour::from_rfc3339(text(TIMESTAMP))
            .unwrap_or_else(|| UtcHour::from_unix_millis(now_millis())),
        log_group: text(LOG_GROUP).to_owned(),
        owner: text(OWNER).to_owned(),
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
        let mut records = VecDeque::from([
            record(1, payload(3)),
            record(2, gzip(control)),
            record(3, b"corrupt".to_vec()),
        ]);
        let mut parts = VecDeque::new();
        let probe = p
            .records(&mut records, &[], &sink, &metrics, &mut parts)
            .unwrap();
        assert_eq!(
            (probe, records.len()),
            (None, 2),
            "decoding stops at the first record with parts"
        );
        while !records.is_empty() {
            p.records(&mut records, &[], &sink, &metrics, &mut parts)
                .unwrap();
        }
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

    /// An object sink's shard: whole records per object, cut at the limits,
    /// probed after a restart and cut again where the earlier object ended.
    #[test]
    fn objects_are_runs_of_whole_records_cut_where_earlier_ones_ended() {
        let (tx, mut acks) = mpsc::unbounded_channel();
        let limits = PartLimits {
            max_docs: 5,
            max_bytes: 1 << 20,
            decode: Limits::default(),
        };
        let mut p = ShardPipeline::new("s", None, tx, limits, ShardCounters::default())
            .cut_objects(Duration::from_secs(60));
        let sink = Stdout::to(Vec::new());
        let metrics = WorkerMetrics::default();
        let mut records: VecDeque<Record> = (1..=6).map(|n| record(n, payload(2))).collect();
        let mut parts = VecDeque::new();
        // The first object asks whether an earlier holder wrote one from record 1.
        let probe = p
            .records(&mut records, &[], &sink, &metrics, &mut parts)
            .unwrap()
            .expect("a probe");
        assert_eq!(probe.first.as_str(), "1");
        assert_eq!(probe.meta.log_group, "g");
        assert_eq!(records.len(), 6, "the record waits for the answer");
        // It did, ending at record 2: that object is cut there again.
        p.probed(&probe, Some(SequenceNumber::parse("2").unwrap()));
        let probe = loop {
            let probe = p
                .records(&mut records, &[], &sink, &metrics, &mut parts)
                .unwrap();
            if let Some(probe) = probe {
                break probe;
            }
        };
        assert_eq!(probe.first.as_str(), "3");
        assert_eq!(parts.len(), 1);
        // None from record 3: from there on, the limits cut (5 documents: 3 records).
        p.probed(&probe, None);
        while !records.is_empty() {
            let probe = p.records(&mut records, &[], &sink, &metrics, &mut parts);
            assert_eq!(probe.unwrap(), None);
        }
        let spans: Vec<(&str, &str, usize)> = parts
            .iter()
            .map(|part| {
                let span = part.span().expect("an object part");
                (
                    span.first.as_str(),
                    span.last.as_str(),
                    part.encoded().len(),
                )
            })
            .collect();
        assert_eq!(spans, [("1", "2", 4), ("3", "5", 6)]);
        // Record 6 stays open until its time is up.
        assert!(p.object_due().is_some());
        let last = p.cut_now().expect("the open object");
        assert_eq!(last.encoded().len(), 2);
        // Nothing moves until the first object is delivered, then all of it.
        for part in [parts.pop_front().unwrap(), parts.pop_front().unwrap(), last] {
            Batch::of(part).settle(&[]);
            p.acked(&acks.try_recv().unwrap()).unwrap();
        }
        assert_eq!(p.checkpoint().map(SequenceNumber::as_str), Some("6"));
        assert_eq!(p.in_flight(), 0);
    }
}
