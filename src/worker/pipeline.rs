//! One shard's records on their way to the sink driver, in two steps.
//! [`prepare`] decodes, transforms and encodes a record (pure, and run off the
//! async runtime: a slow record must not delay lease renewals); the shard's
//! [`ShardPipeline`] then cuts what it prepared into parts, keeps the watermark
//! of what is delivered, and counts. No I/O: the shard task moves parts and
//! acks, this decides what they mean.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::checkpoint::watermark::{Watermark, WatermarkError};
use super::dead_letter::Why;
use super::decode::cloudwatch::Limits;
use super::document::{Document, LOG_GROUP, OWNER, TIMESTAMP};
use super::health::ShardCounters;
use super::process::{Streamed, process_each};
use super::sink::batch::{AckTo, Acked, Earlier, Encoded, ObjectMeta, Part};
use super::sink::cut::{Cutter, Probe, RecordDocs};
use super::sink::{EncodeError, Encoder};
use super::transform::Compiled;
use crate::aws::kinesis::Record;
use crate::contract::{SequenceNumber, UtcHour};
use crate::telemetry::{ErrorLabels, ShardLabels, WorkerMetrics};
use crate::time::now_millis;

/// Why a shard's pipeline cannot go on. Bad data is not one of them (it is
/// dead-lettered); these are bugs, and a record that nothing would store.
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
    /// A document of the record was refused for good, and so was its dead
    /// letter: the shard stops before it, so that nothing after it is
    /// checkpointed past it.
    #[error("record {sequence} cannot be stored: {reason}")]
    Unstored {
        /// The record.
        sequence: SequenceNumber,
        /// Why.
        reason: String,
    },
    /// Preparing a record panicked (a bug).
    #[error("preparing a record panicked: {0}")]
    Panicked(String),
    /// Another holder of the shard wrote the object that starts at this
    /// record: the shard reads again from its checkpoint, and finds it.
    #[error("record {sequence}: {reason}; reading again from the checkpoint")]
    Superseded {
        /// The record.
        sequence: SequenceNumber,
        /// Why.
        reason: String,
    },
}

/// How a shard's records are prepared.
#[derive(Clone, Copy, Debug)]
pub struct PartLimits {
    /// Most bytes in a part (the batch's limit): no record's buffer is made
    /// larger to begin with.
    pub max_bytes: usize,
    /// Largest inflated payload accepted.
    pub decode: Limits,
    /// CPU time a record may take to prepare before it is dead-lettered (`too_slow`).
    pub budget: Duration,
    /// Bytes of encoded documents a record may become before it is
    /// dead-lettered (`too_large`).
    pub max_output: usize,
    /// Whether a record's first document gives the key parts of the object
    /// it starts ([`PerShard`](super::sink::Batching::PerShard) sinks name
    /// objects so).
    pub object_meta: bool,
}

/// What a record became.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    /// Documents, from this many events.
    Documents(usize),
    /// A control message: nothing to deliver.
    Control,
    /// A dead letter, for this reason.
    DeadLetter(&'static str),
}

/// How large a record's encoded documents are likely to be, learnt from the
/// shard's records before it: its buffer is made that size at once. A buffer
/// grown by doubling instead leaves its earlier copies behind in the
/// allocator, resident: with a stalled sink (whose buffer holds its full
/// budget of parts) that slack was a quarter of the worker's memory.
#[derive(Clone, Copy, Debug)]
pub struct Sizing {
    /// Encoded bytes per compressed byte of the last record that became
    /// documents, in 1/1024ths, at most [`Sizing::MAX_RATIO`].
    ratio: usize,
}

impl Default for Sizing {
    fn default() -> Self {
        // Documents come to several times the compressed record.
        Sizing { ratio: 8 << 10 }
    }
}

impl Sizing {
    /// The most a record is guessed to grow by: a record of tiny events may
    /// grow a thousandfold, and the one after it must not be given room
    /// for that. Such records grow their buffer as they go.
    const MAX_RATIO: usize = 64 << 10;

    /// How many bytes of documents records of `bytes` bytes likely become.
    pub fn expected(&self, bytes: usize) -> usize {
        bytes.saturating_mul(self.ratio) >> 10
    }

    /// Room for the documents of a record of `bytes` bytes: an eighth more
    /// than the last ratio gives, at most `max`.
    fn capacity(&self, bytes: usize, max: usize) -> usize {
        let expected = self.expected(bytes);
        expected.saturating_add(expected / 8).min(max)
    }

    /// Learns from a record of `bytes` bytes that became `encoded` bytes.
    fn learn(&mut self, bytes: usize, encoded: usize) {
        if bytes > 0 && encoded > 0 {
            let ratio = (encoded.saturating_mul(1 << 10) / bytes).saturating_add(1);
            self.ratio = ratio.min(Self::MAX_RATIO);
        }
    }
}

/// A record prepared for the sink: its documents (or its dead letter) in the
/// sink's wire form.
#[derive(Debug)]
pub struct Prepared {
    /// The record.
    pub sequence: SequenceNumber,
    /// The record's size.
    pub bytes: usize,
    /// What it became.
    pub kind: Kind,
    /// Its documents, encoded.
    pub encoded: Encoded,
    /// For an object sink: the key parts of its first document.
    pub meta: Option<ObjectMeta>,
}

/// Decodes, transforms and encodes one record of `shard` with `encoder` (pure),
/// one document at a time. A record that cannot be decoded, is over its
/// budget, has a document the sink cannot encode, or becomes more than
/// `max_output` bytes of documents (a small record of many tiny events can
/// become a thousand times its size) becomes a dead letter. Fails only when
/// even the dead letter cannot be encoded. `sizing` learns from each record
/// how much room the next one needs.
pub fn prepare<E: Encoder>(
    shard: &str,
    record: &Record,
    transforms: &[Compiled],
    encoder: &E,
    limits: &PartLimits,
    sizing: &mut Sizing,
) -> Result<Prepared, PipelineError> {
    let prepared = |kind, encoded, meta| Prepared {
        sequence: record.sequence.clone(),
        bytes: record.data.len(),
        kind,
        encoded,
        meta,
    };
    // Room for what such a record became last (touched only as written), at
    // most a batch.
    let mut encoded = Encoded::with_capacity(sizing.capacity(record.data.len(), limits.max_bytes));
    let mut meta = None;
    let streamed = process_each(
        shard,
        record,
        transforms,
        limits.decode,
        limits.budget,
        &mut |doc| {
            if limits.object_meta && meta.is_none() {
                meta = Some(object_meta(&doc));
            }
            encoded
                .push(|out| encoder.encode(&doc, out))
                .map_err(|e| Why {
                    reason: "encode",
                    message: e.to_string(),
                    status: None,
                    error_type: None,
                })?;
            if encoded.byte_len() > limits.max_output {
                return Err(Why {
                    reason: "too_large",
                    message: format!(
                        "its documents come to more than {} bytes",
                        limits.max_output
                    ),
                    status: None,
                    error_type: None,
                });
            }
            Ok(())
        },
    );
    let letter = match streamed {
        Streamed::Control => return Ok(prepared(Kind::Control, Encoded::default(), None)),
        Streamed::Events(events) => {
            sizing.learn(record.data.len(), encoded.byte_len());
            // A record unlike the last (a thousand tiny events after a few
            // large ones) must not keep the room guessed for it.
            encoded.trim();
            return Ok(prepared(Kind::Documents(events), encoded, meta));
        }
        Streamed::Rejected(letter) => *letter,
    };
    drop(encoded);
    let reason = letter.why().reason;
    let letter = letter.to_document(now_millis());
    let mut encoded = Encoded::default();
    encoded
        .push(|out| encoder.encode_dead_letter(&letter, out))
        .map_err(|source| PipelineError::Encode {
            sequence: record.sequence.clone(),
            source,
        })?;
    let meta = limits.object_meta.then(|| object_meta(&letter));
    Ok(prepared(Kind::DeadLetter(reason), encoded, meta))
}

/// What [`ShardPipeline::accept`] made of a prepared record.
#[derive(Debug)]
pub enum Accepted {
    /// Taken: its parts (if any) are out.
    Done,
    /// An object sink must first say where an earlier object from this record
    /// ended ([`ShardPipeline::probed`]); then the record is accepted again.
    Probe(Box<(Probe, Prepared)>),
}

/// The pipeline state of one shard held by this worker.
pub struct ShardPipeline {
    to: AckTo,
    labels: ShardLabels,
    watermark: Watermark,
    limits: PartLimits,
    /// How records become parts, as the sink batches.
    cutter: Cutter,
    /// Delivery counters published on the lease.
    pub counters: ShardCounters,
}

impl ShardPipeline {
    /// A pipeline resuming after `checkpoint`, cutting records with
    /// `cutter`; acks for its parts come back on `acks`.
    pub fn new(
        shard: &str,
        checkpoint: Option<SequenceNumber>,
        acks: UnboundedSender<Acked>,
        limits: PartLimits,
        cutter: Cutter,
        mut counters: ShardCounters,
    ) -> ShardPipeline {
        // A checkpoint already past the record the shard stopped at (moved by
        // hand) holds it there no more.
        counters.passed(checkpoint.as_ref());
        ShardPipeline {
            to: AckTo {
                shard: Arc::from(shard),
                channel: acks,
            },
            labels: WorkerMetrics::shard(shard),
            watermark: Watermark::new(checkpoint),
            limits,
            cutter,
            counters,
        }
    }

    /// The limits records are prepared with.
    pub fn limits(&self) -> &PartLimits {
        &self.limits
    }

    /// Whether `next` may go out while `sent` of the shard's parts are: one
    /// at a time for an object sink; and while the shard is held at a record
    /// it stopped at before, that record's parts and those after it go
    /// alone, so that nothing after it is stored while it may fail again.
    pub fn may_send(&self, sent: usize, next: &Part) -> bool {
        sent == 0 || (self.cutter.may_send(sent) && !self.goes_alone(next))
    }

    /// Whether `part` is of the record the shard is held at, or after it.
    pub fn goes_alone(&self, part: &Part) -> bool {
        self.counters
            .health
            .blocked_at
            .as_ref()
            .is_some_and(|at| part.record().is_none_or(|r| r >= at))
    }

    /// The shard.
    pub fn shard(&self) -> &str {
        &self.to.shard
    }

    /// The answer to a [`Probe`]: where the object ended, if it exists.
    pub fn probed(&mut self, probe: &Probe, earlier: Option<Earlier>) {
        self.cutter.probed(probe, earlier);
    }

    /// When the parts held back must be cut, if by time.
    pub fn due(&self) -> Option<Instant> {
        self.cutter.due()
    }

    /// Cuts what is held back now (its time is up, or the shard ended).
    pub fn cut_now(&mut self) -> Option<Part> {
        self.cutter.cut_now(&self.to)
    }

    /// Takes a prepared record: cuts it into parts appended to `out` and
    /// registers it in the watermark with the number of parts it waits for,
    /// unless an object sink must first answer a [`Probe`].
    pub fn accept(
        &mut self,
        prepared: Prepared,
        metrics: &WorkerMetrics,
        out: &mut VecDeque<Part>,
    ) -> Result<Accepted, PipelineError> {
        if let Some(probe) = self.cutter.probe(
            &prepared.sequence,
            prepared.encoded.is_empty(),
            prepared.meta.as_ref(),
        ) {
            return Ok(Accepted::Probe(Box::new((probe, prepared))));
        }
        let Prepared {
            sequence,
            bytes,
            kind,
            encoded,
            meta,
        } = prepared;
        let record = RecordDocs {
            sequence: &sequence,
            encoded,
            meta,
            dead: matches!(kind, Kind::DeadLetter(_)),
        };
        let before = out.len();
        let parts = self.cutter.cut(record, &self.to, out);
        if let Err(e) = self.watermark.read(sequence.clone(), parts) {
            // A bug (records out of order) that fails the shard: none of
            // the parts cut now goes out (an object sink's open object
            // keeps the record, but nothing delivers it any more).
            out.truncate(before);
            return Err(e.into());
        }
        self.counters.passed(self.watermark.checkpoint());
        metrics.records_read.get_or_create(&self.labels).inc();
        metrics
            .bytes_read
            .get_or_create(&self.labels)
            .inc_by(bytes as u64);
        match kind {
            Kind::Documents(events) => {
                metrics.events_decoded.inc_by(events as u64);
            }
            Kind::Control => {
                metrics.control_messages.inc();
            }
            Kind::DeadLetter(reason) => {
                metrics
                    .errors
                    .get_or_create(&ErrorLabels::processing(reason))
                    .inc();
                tracing::warn!(shard = %self.to.shard, %sequence, %reason, "record dead-lettered");
            }
        }
        Ok(Accepted::Done)
    }

    /// A part came back: stored (the checkpoint may move), or stored nowhere
    /// (the shard stops before that record).
    pub fn acked(&mut self, acked: &Acked) -> Result<(), PipelineError> {
        match &acked.result {
            Ok(stored) => {
                self.watermark.ack(&acked.sequence)?;
                self.counters.delivered(stored, now_millis());
                self.counters.passed(self.watermark.checkpoint());
                Ok(())
            }
            Err(unstored) if unstored.superseded => Err(PipelineError::Superseded {
                sequence: acked.sequence.clone(),
                reason: unstored.reason.clone(),
            }),
            Err(unstored) => Err(PipelineError::Unstored {
                sequence: acked.sequence.clone(),
                reason: unstored.reason.clone(),
            }),
        }
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
    let text = |key: &str| doc.text(key).unwrap_or_default();
    ObjectMeta {
        hour: UtcHour::from_unix_millis(doc.millis(TIMESTAMP).unwrap_or_else(now_millis)),
        log_group: text(LOG_GROUP).to_owned(),
        owner: text(OWNER).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;
    use crate::contract::ShardHealth;
    use crate::worker::decode::cloudwatch::tests::gzip;
    use crate::worker::sink::batch::{BatchLimits, Stored};
    use crate::worker::sink::{Batch, Batching, Delivered, NdJson};

    fn record(n: u64, data: Vec<u8>) -> Record {
        Record {
            sequence: SequenceNumber::parse(&n.to_string()).unwrap(),
            data,
            arrival_millis: None,
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

    /// A fresh shard's pipeline cutting parts of at most `max_docs`
    /// documents for a sink that batches so, and where its acks come back.
    fn pipeline(
        max_docs: usize,
        batching: Batching,
    ) -> (ShardPipeline, mpsc::UnboundedReceiver<Acked>) {
        let batch = BatchLimits::new(max_docs, 1 << 20, Duration::from_secs(60));
        let limits = PartLimits {
            max_bytes: batch.max_bytes,
            decode: Limits::default(),
            budget: Duration::from_secs(60),
            max_output: 64 << 20,
            object_meta: batching == Batching::PerShard,
        };
        let (tx, acks) = mpsc::unbounded_channel();
        let cutter = Cutter::new(batching, batch);
        let p = ShardPipeline::new("s", None, tx, limits, cutter, ShardCounters::default());
        (p, acks)
    }

    /// Prepares and accepts `records` in order, answering no probe.
    fn feed(
        p: &mut ShardPipeline,
        records: Vec<Record>,
        metrics: &WorkerMetrics,
        parts: &mut VecDeque<Part>,
    ) {
        for record in records {
            let prepared = prepare(
                "s",
                &record,
                &[],
                &NdJson,
                p.limits(),
                &mut Sizing::default(),
            )
            .unwrap();
            assert!(matches!(
                p.accept(prepared, metrics, parts),
                Ok(Accepted::Done)
            ));
        }
    }

    fn settle(part: Part, acks: &mut mpsc::UnboundedReceiver<Acked>) -> Acked {
        Batch::of(part).settle(&Delivered::default());
        acks.try_recv().unwrap()
    }

    /// A record's buffer is made as large as what the shard's last record
    /// became, with a little room: it is neither grown nor mostly empty.
    #[test]
    fn a_records_buffer_is_sized_by_what_the_last_one_became() {
        let (p, _acks) = pipeline(1000, Batching::Shared);
        let mut sizing = Sizing::default();
        let data = payload(50);
        let first = prepare(
            "s",
            &record(1, data.clone()),
            &[],
            &NdJson,
            p.limits(),
            &mut sizing,
        );
        let encoded = first.unwrap().encoded.byte_len();
        let room = sizing.capacity(data.len(), usize::MAX);
        assert!(
            room >= encoded && room <= encoded + encoded / 4,
            "{room} bytes of room for {encoded}"
        );
        assert_eq!(sizing.capacity(data.len(), 100), 100, "at most a batch");
        // After a record that grew a thousandfold, a plain one is given
        // room for at most 64 times its size, and keeps only what it takes.
        sizing.learn(1, encoded);
        assert_eq!(
            sizing.capacity(data.len(), usize::MAX),
            data.len() * 64 + data.len() * 8
        );
        let plain = prepare(
            "s",
            &record(3, data.clone()),
            &[],
            &NdJson,
            p.limits(),
            &mut sizing,
        );
        let plain = plain.unwrap().encoded;
        assert!(
            plain.capacity() <= plain.byte_len() + plain.byte_len() / 4,
            "{} bytes of room for {}",
            plain.capacity(),
            plain.byte_len()
        );
        // A control message or a dead letter teaches nothing.
        let learnt = sizing.capacity(data.len(), usize::MAX);
        prepare(
            "s",
            &record(2, b"corrupt".to_vec()),
            &[],
            &NdJson,
            p.limits(),
            &mut sizing,
        )
        .unwrap();
        assert_eq!(sizing.capacity(data.len(), usize::MAX), learnt);
    }

    #[test]
    fn records_become_parts_and_the_checkpoint_follows_the_acks() {
        let (mut p, mut acks) = pipeline(2, Batching::Shared);
        let metrics = WorkerMetrics::default();
        let control = br#"{"messageType":"CONTROL_MESSAGE","owner":"CloudwatchLogs","logGroup":"","logStream":"","subscriptionFilters":[],"logEvents":[]}"#;
        let mut parts = VecDeque::new();
        feed(
            &mut p,
            vec![
                record(1, payload(3)),
                record(2, gzip(control)),
                record(3, b"corrupt".to_vec()),
            ],
            &metrics,
            &mut parts,
        );
        let sizes: Vec<usize> = parts.iter().map(|p| p.encoded().len()).collect();
        assert_eq!(
            sizes,
            [2, 1, 1],
            "3 events in parts of 2, and a dead letter"
        );
        assert_eq!(p.checkpoint(), None);
        // Deliver the last two parts first: nothing moves until the first is done.
        let first = parts.pop_front().unwrap();
        let second = parts.pop_front().unwrap();
        let dead = parts.pop_front().unwrap();
        for part in [dead, second] {
            let acked = settle(part, &mut acks);
            p.acked(&acked).unwrap();
            assert_eq!(p.checkpoint(), None);
        }
        p.acked(&settle(first, &mut acks)).unwrap();
        assert_eq!(p.checkpoint().map(SequenceNumber::as_str), Some("3"));
        assert_eq!(p.counters.health.delivered, 3, "stored documents only");
        assert_eq!(p.counters.health.dead_lettered, 1, "counted once stored");
        assert_eq!(p.in_flight(), 0);
    }

    /// A part that nothing would store stops the shard there: the checkpoint
    /// never passes it, whatever comes back after.
    #[test]
    fn a_part_stored_nowhere_holds_the_checkpoint_and_says_where() {
        let (mut p, mut acks) = pipeline(10, Batching::Shared);
        let metrics = WorkerMetrics::default();
        let mut parts = VecDeque::new();
        feed(
            &mut p,
            vec![record(1, payload(1)), record(2, payload(1))],
            &metrics,
            &mut parts,
        );
        let first = parts.pop_front().unwrap();
        Batch::of(first).settle(&Delivered {
            failed: vec![(0, "refused twice".into())],
            ..Delivered::default()
        });
        let err = p.acked(&acks.try_recv().unwrap()).unwrap_err();
        assert!(
            matches!(&err, PipelineError::Unstored { sequence, reason } if sequence.as_str() == "1" && reason == "refused twice"),
            "{err}"
        );
        p.acked(&settle(parts.pop_front().unwrap(), &mut acks))
            .unwrap();
        assert_eq!(p.checkpoint(), None, "record 2 is stored, record 1 is not");
        assert_eq!(
            p.counters.health.delivered, 1,
            "only what was stored counts"
        );
    }

    /// A shard taken again after it stopped at a record sends the records
    /// before it as usual, then that record's parts alone, and those after
    /// it only once it is stored: nothing after it is stored while it may
    /// fail again, and the status says it is held there until then.
    #[test]
    fn a_shard_held_at_a_record_sends_it_alone_until_past_it() {
        let (p, _acks) = pipeline(10, Batching::Shared);
        let seq = |n: u64| SequenceNumber::parse(&n.to_string()).unwrap();
        let held = |checkpoint: Option<u64>| {
            let (tx, acks) = mpsc::unbounded_channel();
            let counters = ShardCounters::resume(
                "w",
                Some(ShardHealth {
                    blocked: Some("record 3: refused".into()),
                    blocked_at: Some(seq(3)),
                    ..ShardHealth::default()
                }),
            );
            let batch = BatchLimits::new(10, 1 << 20, Duration::from_secs(60));
            let cutter = Cutter::new(Batching::Shared, batch);
            let p = ShardPipeline::new("s", checkpoint.map(seq), tx, *p.limits(), cutter, counters);
            (p, acks)
        };
        let (mut p, mut acks) = held(None);
        assert_eq!(
            p.counters.health.blocked.as_deref(),
            Some("record 3: refused")
        );
        let metrics = WorkerMetrics::default();
        let mut parts = VecDeque::new();
        feed(
            &mut p,
            (1..=4).map(|n| record(n, payload(1))).collect(),
            &metrics,
            &mut parts,
        );
        let [one, two, three, four] = <[Part; 4]>::try_from(Vec::from(parts)).unwrap();
        assert!(p.may_send(1, &two), "records before it go together");
        assert!(!p.goes_alone(&two) && p.goes_alone(&three));
        assert!(
            !p.may_send(2, &three) && p.may_send(0, &three),
            "it goes alone"
        );
        for part in [one, two] {
            p.acked(&settle(part, &mut acks)).unwrap();
        }
        assert_eq!(p.checkpoint(), Some(&seq(2)));
        assert!(!p.may_send(1, &four), "record 3 is not stored yet");
        assert!(p.counters.health.blocked.is_some());
        p.acked(&settle(three, &mut acks)).unwrap();
        assert!(p.may_send(1, &four), "past record 3");
        assert_eq!(
            (&p.counters.health.blocked, &p.counters.health.blocked_at),
            (&None, &None)
        );
        // A checkpoint already past the record: not held.
        let (past, _acks) = held(Some(3));
        assert_eq!(past.counters.health.blocked, None);
        // A holder that finds no record named resumes as usual.
        let fresh = ShardCounters::resume(
            "w",
            Some(ShardHealth {
                blocked: Some("from a worker that names no record".into()),
                ..ShardHealth::default()
            }),
        );
        assert_eq!(fresh.health.blocked, None);
        // An object sink's shard has one part out at a time, held or not.
        let (objects, _acks) = pipeline(10, Batching::PerShard);
        assert!(objects.may_send(0, &four) && !objects.may_send(1, &four));
    }

    /// An object sink's shard: whole records per object, cut at the limits,
    /// probed after a restart and cut again where the earlier object ended.
    #[test]
    fn objects_are_runs_of_whole_records_cut_where_earlier_ones_ended() {
        let (mut p, mut acks) = pipeline(5, Batching::PerShard);
        let metrics = WorkerMetrics::default();
        let mut parts = VecDeque::new();
        let mut probes = Vec::new();
        for n in 1..=6 {
            let prepared = prepare(
                "s",
                &record(n, payload(2)),
                &[],
                &NdJson,
                p.limits(),
                &mut Sizing::default(),
            )
            .unwrap();
            match p.accept(prepared, &metrics, &mut parts).unwrap() {
                Accepted::Done => {}
                Accepted::Probe(probed) => {
                    let (probe, prepared) = *probed;
                    // An earlier holder wrote an object from record 1 to 2,
                    // and none from record 3.
                    let earlier = (probe.first.as_str() == "1").then(|| Earlier {
                        last: SequenceNumber::parse("2").unwrap(),
                        key: "s/1.json.gz".into(),
                    });
                    assert_eq!(probe.meta.log_group, "g");
                    p.probed(&probe, earlier);
                    probes.push(probe.first.to_string());
                    assert!(matches!(
                        p.accept(prepared, &metrics, &mut parts).unwrap(),
                        Accepted::Done
                    ));
                }
            }
        }
        assert_eq!(probes, ["1", "3"], "asked until an object was not there");
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
        // Cut at record 2 as before; from record 3 on the limits cut (5
        // documents: 3 records).
        assert_eq!(spans, [("1", "2", 4), ("3", "5", 6)]);
        let written: Vec<Option<&str>> = parts
            .iter()
            .map(|part| part.span().and_then(|s| s.written.as_deref()))
            .collect();
        assert_eq!(
            written,
            [Some("s/1.json.gz"), None],
            "only the replay is there already"
        );
        // Record 6 stays open until its time is up.
        assert!(p.due().is_some());
        let last = p.cut_now().expect("the open object");
        assert_eq!(last.encoded().len(), 2);
        // Nothing moves until the first object is delivered, then all of it.
        for part in [parts.pop_front().unwrap(), parts.pop_front().unwrap(), last] {
            let acked = settle(part, &mut acks);
            assert!(matches!(acked.result, Ok(Stored { .. })));
            p.acked(&acked).unwrap();
        }
        assert_eq!(p.checkpoint().map(SequenceNumber::as_str), Some("6"));
        assert_eq!(p.in_flight(), 0);
    }
}
