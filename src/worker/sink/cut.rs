//! How one shard's records become parts, by its sink's [`Batching`]: each
//! record cut to the batch limits, for batches shared among shards; or runs of
//! whole records, one object each, cut where the objects an earlier holder of
//! the shard wrote ended, so that a replay writes the same objects.

use std::collections::VecDeque;

use tokio::time::Instant;

use super::Batching;
use super::batch::{AckTo, BatchLimits, Earlier, Encoded, ObjectMeta, Part, Span};
use crate::contract::SequenceNumber;

/// A record's documents, to be cut.
#[derive(Debug)]
pub struct RecordDocs<'a> {
    /// The record.
    pub sequence: &'a SequenceNumber,
    /// Its documents, encoded.
    pub encoded: Encoded,
    /// Its first document's key parts.
    pub meta: Option<ObjectMeta>,
    /// Whether the documents are its dead letter.
    pub dead: bool,
}

/// An object sink must be asked where the object starting at `first` ended.
#[derive(Debug, PartialEq)]
pub struct Probe {
    /// The first record of the object.
    pub first: SequenceNumber,
    /// Its key's parts.
    pub meta: ObjectMeta,
}

/// One shard's cutting: each record on its own, in parts that fit a batch,
/// or runs of whole records as objects.
#[derive(Debug)]
pub struct Cutter {
    limits: BatchLimits,
    objects: Option<Objects>,
}

/// A shard's objects: runs of whole records, cut at the limits or after
/// `max_wait`, except where an object written before a restart ended, which
/// is where the replay must cut again.
#[derive(Debug)]
struct Objects {
    open: Option<OpenObject>,
    /// Whether objects may exist beyond the checkpoint: asked for each new
    /// object until one is not there.
    probing: bool,
    /// The record a probe was answered for, and the object found there.
    probed: Option<(SequenceNumber, Option<Earlier>)>,
}

#[derive(Debug)]
struct OpenObject {
    encoded: Encoded,
    first: SequenceNumber,
    last: SequenceNumber,
    meta: ObjectMeta,
    opened: Instant,
    /// The object an earlier holder wrote from the same first record: this
    /// one ends where it did.
    earlier: Option<Earlier>,
    /// Its documents that are dead letters.
    dead_letters: usize,
}

impl Cutter {
    /// The cutting for a sink that batches so, within `limits`.
    pub fn new(batching: Batching, limits: BatchLimits) -> Cutter {
        let objects = (batching == Batching::PerShard).then_some(Objects {
            open: None,
            probing: true,
            probed: None,
        });
        Cutter { limits, objects }
    }

    /// Whether another part may go out while `sent` of the shard's are: an
    /// object shard has one at a time, so that objects land in order and a
    /// replay finds where they ended.
    pub fn may_send(&self, sent: usize) -> bool {
        self.objects.is_none() || sent == 0
    }

    /// The question to ask the sink before the record at `sequence` can be
    /// cut, if any: where an earlier object starting there ended.
    pub fn probe(
        &self,
        sequence: &SequenceNumber,
        empty: bool,
        meta: Option<&ObjectMeta>,
    ) -> Option<Probe> {
        let objects = self.objects.as_ref()?;
        let ask = objects.open.is_none()
            && !empty
            && objects.probing
            && objects
                .probed
                .as_ref()
                .is_none_or(|(first, _)| first != sequence);
        ask.then(|| Probe {
            first: sequence.clone(),
            meta: meta.cloned().unwrap_or_default(),
        })
    }

    /// The answer to a [`Probe`]: where the object ended, if it exists.
    pub fn probed(&mut self, probe: &Probe, earlier: Option<Earlier>) {
        if let Some(objects) = &mut self.objects {
            objects.probing = earlier.is_some();
            objects.probed = Some((probe.first.clone(), earlier));
        }
    }

    /// Cuts a record's documents into parts appended to `out`; returns how
    /// many parts its acknowledgement waits for (an object's first record
    /// waits for the object; the others of it for nothing more).
    pub fn cut(&mut self, record: RecordDocs<'_>, to: &AckTo, out: &mut VecDeque<Part>) -> usize {
        if let Some(objects) = &mut self.objects {
            return objects.add(record, &self.limits, to, out);
        }
        if record.encoded.is_empty() {
            return 0;
        }
        let parts = record
            .encoded
            .split(self.limits.max_docs, self.limits.max_bytes);
        let n = parts.len();
        out.extend(parts.into_iter().map(|p| {
            let dead_letters = if record.dead { p.len() } else { 0 };
            Part::new(p, Some(to.ack(record.sequence))).with_dead_letters(dead_letters)
        }));
        n
    }

    /// When the open object must be cut, if it may be cut by time.
    pub fn due(&self) -> Option<Instant> {
        let open = self.objects.as_ref()?.open.as_ref()?;
        open.earlier
            .is_none()
            .then_some(open.opened + self.limits.max_wait)
    }

    /// Cuts the open object now (its time is up, or the shard ended).
    pub fn cut_now(&mut self, to: &AckTo) -> Option<Part> {
        Some(close(self.objects.as_mut()?.open.take()?, to))
    }
}

impl Objects {
    /// Adds a record's documents to the open object, and cuts it when full
    /// or where an earlier one ended.
    fn add(
        &mut self,
        record: RecordDocs<'_>,
        limits: &BatchLimits,
        to: &AckTo,
        out: &mut VecDeque<Part>,
    ) -> usize {
        let RecordDocs {
            sequence,
            encoded,
            meta,
            dead,
        } = record;
        let dead_letters = if dead { encoded.len() } else { 0 };
        let waits = match &mut self.open {
            // Nothing to deliver and no object open: done at once.
            None if encoded.is_empty() => return 0,
            None => {
                let earlier = match &self.probed {
                    Some((first, earlier)) if first == sequence => earlier.clone(),
                    _ => None,
                };
                self.open = Some(OpenObject {
                    encoded,
                    first: sequence.clone(),
                    last: sequence.clone(),
                    meta: meta.unwrap_or_default(),
                    opened: Instant::now(),
                    earlier,
                    dead_letters,
                });
                // The object's first record holds the watermark for all of it.
                1
            }
            Some(open) => {
                open.encoded.append(&encoded);
                open.last = sequence.clone();
                open.dead_letters += dead_letters;
                0
            }
        };
        let full = self.open.as_ref().is_some_and(|open| match &open.earlier {
            Some(earlier) => *sequence >= earlier.last,
            None => {
                open.encoded.len() >= limits.max_docs || open.encoded.byte_len() >= limits.max_bytes
            }
        });
        if full && let Some(open) = self.open.take() {
            out.push_back(close(open, to));
        }
        waits
    }
}

fn close(open: OpenObject, to: &AckTo) -> Part {
    let ack = to.ack(&open.first);
    let written = open
        .earlier
        .filter(|earlier| earlier.last == open.last)
        .map(|earlier| earlier.key);
    let span = Span {
        shard: to.shard.clone(),
        first: open.first,
        last: open.last,
        meta: open.meta,
        written,
    };
    Part::object(open.encoded, span, Some(ack)).with_dead_letters(open.dead_letters)
}
