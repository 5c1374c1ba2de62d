//! Encoded documents on their way to a sink: a record's documents are cut into
//! [`Part`]s that fit a batch, parts are gathered into [`Batch`]es by the
//! [`Batcher`], and each part is acknowledged to its shard once all of its
//! documents are delivered.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use super::SinkError;
use crate::api::BatchSpec;
use crate::contract::SequenceNumber;
use crate::contract::UtcHour;

/// Documents in a sink's wire form, back to back, each with where its
/// source starts (after the header its sink writes before it, such as a bulk
/// action line), where it goes and under which key: what a dead letter needs
/// travels beside the bytes and is never parsed back out of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoded {
    bytes: Vec<u8>,
    docs: Vec<Entry>,
    /// Runs of documents sent to one target (or to none: no header): the
    /// first document of each run, and the target. A record's documents
    /// mostly share one.
    targets: Vec<(usize, Option<Arc<str>>)>,
    /// The documents' keys, back to back.
    keys: String,
}

/// One document's place in [`Encoded`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    /// Where its source starts.
    source: usize,
    /// Where it ends.
    end: usize,
    /// Where its key ends in `keys`.
    key: usize,
}

/// One document being written into [`Encoded`] by an
/// [`Encoder`](super::Encoder).
#[derive(Debug)]
pub struct DocOut<'a> {
    encoded: &'a mut Encoded,
    source: usize,
    headed: bool,
}

impl DocOut<'_> {
    /// Writes the header the document follows (a bulk action line), which
    /// sends it to `target` under `key` (its `_id`). Once per document, before
    /// its source.
    pub fn header(&mut self, target: &str, key: &str, write: impl FnOnce(&mut Vec<u8>)) {
        assert!(!self.headed, "a document has one header");
        self.headed = true;
        let doc = self.encoded.docs.len();
        if self.encoded.target_of_last() != Some(target) {
            self.encoded.targets.push((doc, Some(Arc::from(target))));
        }
        self.encoded.keys.push_str(key);
        write(&mut self.encoded.bytes);
        self.source = self.encoded.bytes.len();
    }

    /// The buffer the document's source is appended to.
    pub fn source(&mut self) -> &mut Vec<u8> {
        &mut self.encoded.bytes
    }
}

/// A document of [`Encoded`], as its sink wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Doc<'a> {
    /// All of it: header and source.
    pub wire: &'a [u8],
    /// The document itself, without its header or final newline.
    pub source: &'a [u8],
    /// Where its header sends it.
    pub target: Option<&'a str>,
    /// The key its header gives it.
    pub key: Option<&'a str>,
}

impl Encoded {
    /// An empty buffer for about `bytes` bytes.
    pub fn with_capacity(bytes: usize) -> Encoded {
        Encoded {
            bytes: Vec::with_capacity(bytes),
            ..Encoded::default()
        }
    }

    /// Makes room for `bytes` more bytes.
    pub fn reserve(&mut self, bytes: usize) {
        self.bytes.reserve(bytes);
    }

    /// Appends one document written by `encode`; nothing is kept if it fails.
    pub fn push<E>(
        &mut self,
        encode: impl FnOnce(&mut DocOut<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let (start, targets, keys) = (self.bytes.len(), self.targets.len(), self.keys.len());
        let mut out = DocOut {
            encoded: self,
            source: start,
            headed: false,
        };
        let written = encode(&mut out);
        let (source, headed) = (out.source, out.headed);
        if let Err(e) = written {
            self.bytes.truncate(start);
            self.targets.truncate(targets);
            self.keys.truncate(keys);
            return Err(e);
        }
        if !headed && self.target_of_last().is_some() {
            self.targets.push((self.docs.len(), None));
        }
        self.docs.push(Entry {
            source,
            end: self.bytes.len(),
            key: self.keys.len(),
        });
        Ok(())
    }

    /// The target of the last run.
    fn target_of_last(&self) -> Option<&str> {
        self.targets.last().and_then(|(_, t)| t.as_deref())
    }

    /// Gives back the room past a quarter more than the documents take: a
    /// part's room in the driver's buffer is counted by what it holds, so
    /// what it merely reserves must stay small.
    pub fn trim(&mut self) {
        let held = self.bytes.len();
        if self.bytes.capacity() > held.saturating_add(held / 4) {
            self.bytes.shrink_to_fit();
        }
    }

    /// Bytes of room held, used or not.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Documents held.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether there are no documents.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Bytes held.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// Bytes of memory the documents hold: their wire form and what
    /// travels beside it. The driver's buffer counts this, a request's size
    /// only the wire form.
    pub fn held(&self) -> usize {
        self.bytes.len()
            + self.keys.len()
            + self.docs.len() * std::mem::size_of::<Entry>()
            + self
                .targets
                .iter()
                // The run, and its target's allocation (two counts and the text).
                .map(|(_, t)| {
                    std::mem::size_of::<(usize, Option<Arc<str>>)>()
                        + t.as_ref().map_or(0, |t| 16 + t.len())
                })
                .sum::<usize>()
    }

    /// All documents, back to back.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn start(&self, i: usize) -> usize {
        if i == 0 { 0 } else { self.docs[i - 1].end }
    }

    fn key_start(&self, i: usize) -> usize {
        if i == 0 { 0 } else { self.docs[i - 1].key }
    }

    /// The target run document `i` is in.
    fn target(&self, i: usize) -> Option<&Arc<str>> {
        let run = self.targets.partition_point(|(first, _)| *first <= i);
        self.targets[run.checked_sub(1)?].1.as_ref()
    }

    /// Document `i`, header and all.
    pub fn wire(&self, i: usize) -> &[u8] {
        &self.bytes[self.start(i)..self.docs[i].end]
    }

    /// Document `i`.
    pub fn doc(&self, i: usize) -> Doc<'_> {
        let Entry { source, end, key } = self.docs[i];
        let source = &self.bytes[source..end];
        let key = &self.keys[self.key_start(i)..key];
        Doc {
            wire: self.wire(i),
            source: source.strip_suffix(b"\n").unwrap_or(source),
            target: self.target(i).map(|t| &**t),
            key: (!key.is_empty()).then_some(key),
        }
    }

    /// Appends document `i` of `from`.
    fn copy(&mut self, from: &Encoded, i: usize) {
        let (start, key_start) = (from.start(i), from.key_start(i));
        let (base, key_base) = (self.bytes.len(), self.keys.len());
        let Entry { source, end, key } = from.docs[i];
        self.bytes.extend_from_slice(&from.bytes[start..end]);
        self.keys.push_str(&from.keys[key_start..key]);
        self.target_from(self.docs.len(), from.target(i));
        self.docs.push(Entry {
            source: source - start + base,
            end: end - start + base,
            key: key - key_start + key_base,
        });
    }

    /// Documents from `doc` on go to `target`.
    fn target_from(&mut self, doc: usize, target: Option<&Arc<str>>) {
        if self.target_of_last() != target.map(|t| &**t) {
            self.targets.push((doc, target.cloned()));
        }
    }

    /// Cuts the documents into runs of at most `max_docs` documents and
    /// `max_bytes` bytes, in order; a single larger document is a run of its own.
    pub fn split(self, max_docs: usize, max_bytes: usize) -> Vec<Encoded> {
        if self.len() <= max_docs && self.byte_len() <= max_bytes {
            return vec![self];
        }
        let mut runs = Vec::new();
        let mut run = Encoded::default();
        for i in 0..self.len() {
            let size = self.docs[i].end - self.start(i);
            let full = run.len() >= max_docs || run.byte_len() + size > max_bytes;
            if full && !run.is_empty() {
                runs.push(std::mem::take(&mut run));
            }
            run.copy(&self, i);
        }
        if !run.is_empty() {
            runs.push(run);
        }
        runs
    }

    /// Appends every document of `other`.
    pub fn append(&mut self, other: &Encoded) {
        let (base, docs, keys) = (self.bytes.len(), self.docs.len(), self.keys.len());
        self.bytes.extend_from_slice(&other.bytes);
        self.keys.push_str(&other.keys);
        self.docs.extend(other.docs.iter().map(|e| Entry {
            source: e.source + base,
            end: e.end + base,
            key: e.key + keys,
        }));
        // Documents before `other`'s first run have no target.
        if other.targets.first().is_none_or(|(first, _)| *first > 0) && !other.is_empty() {
            self.target_from(docs, None);
        }
        for (first, target) in &other.targets {
            self.target_from(first + docs, target.as_ref());
        }
    }

    /// Only the documents at `indexes` (ascending), in order.
    fn select(&self, indexes: &[usize]) -> Encoded {
        let mut out = Encoded::default();
        for &i in indexes {
            out.copy(self, i);
        }
        out
    }
}

/// What a shard task hears back about one part of the record at `sequence`.
#[derive(Debug, PartialEq, Eq)]
pub struct Acked {
    /// The record.
    pub sequence: SequenceNumber,
    /// Stored, or why some document of it could not be stored anywhere.
    pub result: Result<Stored, Unstored>,
}

/// How a part's documents were stored: every one of them is, where it
/// belongs or as a dead letter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// Documents stored where they belong.
    pub documents: usize,
    /// Documents stored as dead letters (the record's own, or documents the
    /// sink refused for good).
    pub dead_lettered: usize,
}

/// A part that was not stored: a document of it that the sink refused for
/// good, with its dead letter (its shard stops at this record), or an object
/// another holder wrote meanwhile (`superseded`: its shard reads again).
/// Nothing of the part is acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unstored {
    /// Why, for the status and the logs.
    pub reason: String,
    /// Whether another holder's object took the part's place.
    pub superseded: bool,
}

/// Where a shard's parts are acknowledged.
#[derive(Clone, Debug)]
pub struct AckTo {
    /// The shard.
    pub shard: Arc<str>,
    /// Its task's acknowledgement channel.
    pub channel: UnboundedSender<Acked>,
}

impl AckTo {
    /// The acknowledgement of a part of the record at `sequence`.
    pub fn ack(&self, sequence: &SequenceNumber) -> Ack {
        Ack {
            to: self.channel.clone(),
            shard: self.shard.clone(),
            sequence: sequence.clone(),
        }
    }
}

/// Where and what to acknowledge when a part is delivered.
#[derive(Debug)]
pub struct Ack {
    /// The shard task's acknowledgement channel.
    pub to: UnboundedSender<Acked>,
    /// The shard the record came from.
    pub shard: Arc<str>,
    /// The record the part came from.
    pub sequence: SequenceNumber,
}

/// What an object's key is made of, from its first document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The document's hour (UTC).
    pub hour: UtcHour,
    /// Its log group.
    pub log_group: String,
    /// Its AWS account.
    pub owner: String,
}

impl Default for ObjectMeta {
    fn default() -> Self {
        ObjectMeta {
            hour: UtcHour::from_unix_millis(crate::time::now_millis()),
            log_group: String::new(),
            owner: String::new(),
        }
    }
}

/// The records an object holds: a run of one shard's records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    /// The shard.
    pub shard: Arc<str>,
    /// Its first record.
    pub first: SequenceNumber,
    /// Its last record.
    pub last: SequenceNumber,
    /// From its first document.
    pub meta: ObjectMeta,
    /// The key of an object an earlier holder of the shard wrote from
    /// exactly these records: there is nothing to write.
    pub written: Option<String>,
}

/// An object an earlier holder of a shard wrote, found by a replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Earlier {
    /// Its last record: the replay cuts there.
    pub last: SequenceNumber,
    /// Its key.
    pub key: String,
}

/// Documents of one record (all, or a run of them), or of a run of records for
/// an object sink, travelling as a unit.
#[derive(Debug)]
pub struct Part {
    encoded: Encoded,
    /// The records of an object part.
    span: Option<Span>,
    /// Documents the part held when made (a retried part holds fewer).
    documents: usize,
    /// Of those, the dead letters it was made with (of records that did not
    /// become documents).
    dead_letters: usize,
    /// Documents the sink refused for good and dead-lettered so far.
    refused: usize,
    ack: Option<Ack>,
    /// Room taken in the driver's buffer, given back when the part is done.
    permit: Option<OwnedSemaphorePermit>,
}

impl Part {
    /// The record whose acknowledgement the part carries (an object's first).
    pub fn record(&self) -> Option<&SequenceNumber> {
        self.ack.as_ref().map(|a| &a.sequence)
    }

    /// A part that acknowledges to `ack` when delivered.
    pub fn new(encoded: Encoded, ack: Option<Ack>) -> Part {
        Part {
            documents: encoded.len(),
            encoded,
            span: None,
            dead_letters: 0,
            refused: 0,
            ack,
            permit: None,
        }
    }

    /// A part holding a run of records, for an object sink.
    pub fn object(encoded: Encoded, span: Span, ack: Option<Ack>) -> Part {
        Part {
            span: Some(span),
            ..Part::new(encoded, ack)
        }
    }

    /// Says that `n` of its documents are dead letters already.
    pub fn with_dead_letters(mut self, n: usize) -> Part {
        self.dead_letters = n.min(self.documents);
        self
    }

    /// The documents.
    pub fn encoded(&self) -> &Encoded {
        &self.encoded
    }

    /// The records of an object part.
    pub fn span(&self) -> Option<&Span> {
        self.span.as_ref()
    }

    pub(crate) fn hold(&mut self, permit: OwnedSemaphorePermit) {
        self.permit = Some(permit);
    }

    /// Whether the shard task it came from has gone (its lease was lost, or
    /// it stopped): its next holder reads the record again, so delivering the
    /// part now would only race that holder.
    fn abandoned(&self) -> bool {
        self.ack.as_ref().is_some_and(|a| a.to.is_closed())
    }

    /// Reports the part stored. A shard task that has gone no longer
    /// listens, which is fine: its next owner reads again.
    fn acknowledge(self) {
        if let Some(ack) = self.ack {
            let dead_lettered = self.dead_letters + self.refused;
            let _ = ack.to.send(Acked {
                sequence: ack.sequence,
                result: Ok(Stored {
                    documents: self.documents.saturating_sub(dead_lettered),
                    dead_lettered,
                }),
            });
        }
    }

    /// Reports that the part was not stored.
    fn fail(self, unstored: Unstored) {
        if let Some(ack) = self.ack {
            let _ = ack.to.send(Acked {
                sequence: ack.sequence,
                result: Err(unstored),
            });
        }
    }
}

/// What a sink made of a batch, by document index (see
/// [`Sink::deliver`](super::Sink::deliver)).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Documents refused for now (e.g. throttled), to be sent again.
    pub retry: Vec<usize>,
    /// Why the first of `retry` was refused: shown on the status while it
    /// lasts (at once for `unwritable`, whose index takes nothing now).
    pub refused: Option<SinkError>,
    /// Documents refused for good and stored as dead letters instead.
    pub dead_lettered: Vec<usize>,
    /// Documents refused for good whose dead letter was refused too, and why:
    /// nothing stored them.
    pub failed: Vec<(usize, String)>,
    /// For an object sink: another holder of the shard wrote an object from
    /// the batch's first record meanwhile. Nothing is acknowledged; the shard
    /// reads again from its checkpoint and finds that object.
    pub superseded: Option<String>,
}

/// Parts delivered together.
#[derive(Debug, Default)]
pub struct Batch {
    parts: Vec<Part>,
    docs: usize,
    bytes: usize,
}

impl Batch {
    /// Documents in the batch.
    pub fn len(&self) -> usize {
        self.docs
    }

    /// Whether the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.docs == 0
    }

    /// Encoded bytes in the batch.
    pub fn byte_len(&self) -> usize {
        self.bytes
    }

    /// The encoded documents as contiguous chunks, in order: written one after
    /// the other they are the request body.
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> {
        self.parts.iter().map(|p| p.encoded.as_bytes())
    }

    /// Every document in its wire form, in order (index `i` of
    /// [`Delivered`] is the `i`th).
    pub fn docs(&self) -> impl Iterator<Item = &[u8]> {
        self.parts
            .iter()
            .flat_map(|p| (0..p.encoded.len()).map(|i| p.encoded.wire(i)))
    }

    /// A batch of one part.
    pub fn of(part: Part) -> Batch {
        let mut batch = Batch::default();
        batch.push(part);
        batch
    }

    /// The records of an object batch (a batch of one object part).
    pub fn span(&self) -> Option<&Span> {
        self.parts.first().and_then(|p| p.span.as_ref())
    }

    /// Document `i`, and where it came from (its shard and record), for
    /// its dead letter.
    pub fn doc(&self, mut i: usize) -> Option<(Doc<'_>, Option<(&str, &SequenceNumber)>)> {
        for part in &self.parts {
            if i < part.encoded.len() {
                let origin = part.ack.as_ref().map(|a| (&*a.shard, &a.sequence));
                return Some((part.encoded.doc(i), origin));
            }
            i -= part.encoded.len();
        }
        None
    }

    pub(crate) fn push(&mut self, part: Part) {
        self.docs += part.encoded.len();
        self.bytes += part.encoded.byte_len();
        self.parts.push(part);
    }

    /// Drops the parts whose shard task has gone; how many documents went.
    pub fn abandon(&mut self) -> usize {
        let before = self.docs;
        let parts = std::mem::take(&mut self.parts);
        self.docs = 0;
        self.bytes = 0;
        for part in parts {
            if !part.abandoned() {
                self.push(part);
            }
        }
        before - self.docs
    }

    /// Settles every part by what the sink made of its documents: a part all
    /// of whose documents are stored is acknowledged, one with a document
    /// stored nowhere fails, and the batch still to send is returned: the
    /// documents to retry.
    pub fn settle(self, delivered: &Delivered) -> Option<Batch> {
        let sorted = |mut v: Vec<usize>| {
            v.sort_unstable();
            v.dedup();
            v
        };
        let retry = sorted(delivered.retry.clone());
        let dead = sorted(delivered.dead_lettered.clone());
        let mut failed = delivered.failed.clone();
        failed.sort_by_key(|(i, _)| *i);
        let in_part = |v: &[usize], range: &std::ops::Range<usize>| {
            let start = v.partition_point(|&i| i < range.start);
            let end = v.partition_point(|&i| i < range.end);
            start..end
        };
        if let Some(reason) = &delivered.superseded {
            for part in self.parts {
                part.fail(Unstored {
                    reason: reason.clone(),
                    superseded: true,
                });
            }
            return None;
        }
        let mut again = Batch::default();
        let mut offset = 0;
        for mut part in self.parts {
            let len = part.encoded.len();
            let range = offset..offset + len;
            offset += len;
            if let Some((_, reason)) = failed.iter().find(|(i, _)| range.contains(i)) {
                part.fail(Unstored {
                    reason: reason.clone(),
                    superseded: false,
                });
                continue;
            }
            part.refused += in_part(&dead, &range).len();
            let ours = &retry[in_part(&retry, &range)];
            if ours.is_empty() {
                part.acknowledge();
                continue;
            }
            let local: Vec<usize> = ours.iter().map(|&i| i - range.start).collect();
            if local.len() != len {
                part.encoded = part.encoded.select(&local);
            }
            again.push(part);
        }
        (!again.is_empty()).then_some(again)
    }
}

/// How large and how old a batch may grow, as the subscription's
/// `workers.batch` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most documents in a batch.
    pub max_docs: usize,
    /// Most bytes in a batch.
    pub max_bytes: usize,
    /// Longest a document waits for its batch to fill.
    pub max_wait: Duration,
}

impl BatchLimits {
    /// These limits, at least one document and one byte.
    pub fn new(max_docs: usize, max_bytes: usize, max_wait: Duration) -> BatchLimits {
        BatchLimits {
            max_docs: max_docs.max(1),
            max_bytes: max_bytes.max(1),
            max_wait,
        }
    }
}

impl From<&BatchSpec> for BatchLimits {
    fn from(spec: &BatchSpec) -> BatchLimits {
        BatchLimits::new(
            usize::try_from(spec.max_events).unwrap_or(1),
            usize::try_from(spec.max_bytes.0).unwrap_or(usize::MAX),
            spec.max_wait.into(),
        )
    }
}

/// Gathers the parts of every shard into batches within the limits; a batch
/// is also due `max_wait` after its first part arrived.
#[derive(Debug)]
pub struct Batcher {
    limits: BatchLimits,
    current: Batch,
    due: Option<Instant>,
}

impl Batcher {
    /// A batcher with these limits.
    pub fn new(limits: BatchLimits) -> Batcher {
        Batcher {
            limits,
            current: Batch::default(),
            due: None,
        }
    }

    /// Adds a part; returns the batches that became ready (the open one when the
    /// part does not fit in it, and the new one when the part fills it).
    pub fn push(&mut self, part: Part, now: Instant) -> Vec<Batch> {
        let mut ready = Vec::new();
        let BatchLimits {
            max_docs,
            max_bytes,
            max_wait,
        } = self.limits;
        let fits = self.current.docs + part.encoded.len() <= max_docs
            && self.current.bytes + part.encoded.byte_len() <= max_bytes;
        if !fits && !self.current.is_empty() {
            ready.extend(self.take());
        }
        if self.current.parts.is_empty() {
            self.due = Some(now + max_wait);
        }
        self.current.push(part);
        if self.current.docs >= max_docs || self.current.bytes >= max_bytes {
            ready.extend(self.take());
        }
        ready
    }

    /// When the open batch must go even if not full.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// The open batch, if it holds anything (parts without documents are
    /// acknowledged at once).
    pub fn take(&mut self) -> Option<Batch> {
        self.due = None;
        let batch = std::mem::take(&mut self.current);
        if batch.is_empty() {
            batch.settle(&Delivered::default());
            None
        } else {
            Some(batch)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;
    use tokio::sync::mpsc;

    use super::*;

    fn encoded(docs: &[&str]) -> Encoded {
        let mut e = Encoded::default();
        for d in docs {
            e.push(|out| {
                out.source().extend_from_slice(d.as_bytes());
                Ok::<(), ()>(())
            })
            .unwrap();
        }
        e
    }

    pub(crate) fn seq(n: u64) -> SequenceNumber {
        SequenceNumber::parse(&n.to_string()).unwrap()
    }

    /// A part of record `n` holding `docs`, acknowledged to `to`.
    pub(crate) fn part(docs: &[&str], n: u64, to: &UnboundedSender<Acked>) -> Part {
        Part::new(
            encoded(docs),
            Some(Ack {
                to: to.clone(),
                shard: Arc::from("shardId-0"),
                sequence: seq(n),
            }),
        )
    }

    #[test]
    fn a_failed_encode_leaves_nothing_behind() {
        let mut e = encoded(&["a\n"]);
        assert!(
            e.push(|out| {
                out.header("t", "k", |b| b.extend_from_slice(b"head\n"));
                out.source().extend_from_slice(b"half");
                Err("no")
            })
            .is_err()
        );
        assert_eq!((e.len(), e.as_bytes()), (1, &b"a\n"[..]));
        assert_eq!(e.doc(0).target, None, "nor its target");
        e.push(|out| {
            out.header("t", "k2", |b| b.extend_from_slice(b"head\n"));
            out.source().extend_from_slice(b"b\n");
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(
            (e.doc(1).target, e.doc(1).key, e.doc(1).source),
            (Some("t"), Some("k2"), &b"b"[..]),
            "nor its key"
        );
    }

    /// Bulk-like documents: a header naming the target and key, then the
    /// source; a document without a target has no header.
    fn headed(docs: &[(Option<&str>, &str)]) -> Encoded {
        let mut e = Encoded::default();
        for (target, source) in docs {
            e.push(|out| {
                if let Some(target) = target {
                    out.header(target, &format!("k{source}"), |b| {
                        b.extend_from_slice(format!("{{\"to\":\"{target}\"}}\n").as_bytes())
                    });
                }
                out.source()
                    .extend_from_slice(format!("{source}\n").as_bytes());
                Ok::<(), ()>(())
            })
            .unwrap();
        }
        e
    }

    type Described<'a> = (Option<&'a str>, Option<&'a str>, &'a [u8]);

    fn described(e: &Encoded) -> Vec<Described<'_>> {
        (0..e.len())
            .map(|i| (e.doc(i).target, e.doc(i).key, e.doc(i).source))
            .collect()
    }

    /// Each document keeps its source, target and key through every cut,
    /// selection and join, and one without a header has neither.
    #[test]
    fn documents_keep_their_source_target_and_key_when_cut_and_joined() {
        let e = headed(&[
            (Some("a"), "1"),
            (Some("a"), "22"),
            (None, "x"),
            (Some("b"), "3"),
            (Some("a"), "4"),
        ]);
        assert_eq!(e.targets.len(), 4, "runs of one target share it");
        // The driver's room for them counts their keys and places too.
        let keys = "k1k22k3k4".len();
        assert!(e.held() >= e.byte_len() + keys + 5 * std::mem::size_of::<Entry>());
        assert_eq!(e.doc(1).wire, b"{\"to\":\"a\"}\n22\n");
        let whole = described(&e);
        assert_eq!(
            whole,
            [
                (Some("a"), Some("k1"), &b"1"[..]),
                (Some("a"), Some("k22"), b"22"),
                (None, None, b"x"),
                (Some("b"), Some("k3"), b"3"),
                (Some("a"), Some("k4"), b"4")
            ]
        );
        let runs = e.clone().split(1, usize::MAX);
        let cut: Vec<_> = runs.iter().flat_map(described).collect();
        assert_eq!(cut, whole);
        let mut joined = Encoded::default();
        for run in &runs {
            joined.append(run);
        }
        assert_eq!(described(&joined), whole);
        assert_eq!(joined.targets, e.targets);
        assert_eq!(
            described(&e.select(&[1, 2, 4])),
            [whole[1], whole[2], whole[4]]
        );
        // Unheaded documents appended after headed ones stay without.
        let mut mixed = headed(&[(Some("a"), "1")]);
        mixed.append(&headed(&[(None, "y"), (Some("a"), "2")]));
        assert_eq!(
            described(&mixed),
            [
                (Some("a"), Some("k1"), &b"1"[..]),
                (None, None, b"y"),
                (Some("a"), Some("k2"), b"2")
            ]
        );
    }

    #[test]
    fn split_respects_both_limits_and_keeps_order() {
        let e = encoded(&["aa", "bb", "cc", "dddddd", "e"]);
        let runs = e.split(2, 5);
        let texts: Vec<&[u8]> = runs.iter().map(Encoded::as_bytes).collect();
        assert_eq!(texts, [&b"aabb"[..], b"cc", b"dddddd", b"e"]);
        assert_eq!(runs[0].len(), 2);
        let whole = encoded(&["a", "b"]);
        assert_eq!(whole.clone().split(2, 2), vec![whole]);
    }

    #[test]
    fn batches_close_on_count_bytes_and_fit() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        let mut b = Batcher::new(BatchLimits::new(3, 100, Duration::from_secs(1)));
        assert!(b.push(part(&["a", "b"], 1, &tx), now).is_empty());
        assert_eq!(b.due(), Some(now + Duration::from_secs(1)));
        // Two more do not fit beside two: the open batch goes, the part stays.
        let ready = b.push(part(&["c", "d"], 2, &tx), now);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].len(), 2);
        // One more fills the batch to the count.
        let ready = b.push(part(&["e"], 3, &tx), now);
        assert_eq!(ready[0].docs().collect::<Vec<_>>(), [b"c", b"d", b"e"]);
        assert!(b.take().is_none());
        let mut small = Batcher::new(BatchLimits::new(100, 4, Duration::ZERO));
        let ready = small.push(part(&["12345"], 4, &tx), now);
        assert_eq!(ready.len(), 1, "an oversized part goes alone");
    }

    fn retry(indexes: &[usize]) -> Delivered {
        Delivered {
            retry: indexes.to_vec(),
            ..Delivered::default()
        }
    }

    fn stored(sequence: u64, documents: usize, dead_lettered: usize) -> Acked {
        Acked {
            sequence: seq(sequence),
            result: Ok(Stored {
                documents,
                dead_lettered,
            }),
        }
    }

    #[test]
    fn settle_acknowledges_whole_parts_and_keeps_the_rest() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut batch = Batch::default();
        batch.push(part(&["a", "b"], 1, &tx));
        batch.push(part(&["c"], 2, &tx));
        batch.push(part(&["d", "e", "f"], 3, &tx));
        let again = batch.settle(&retry(&[4, 1, 4])).unwrap();
        assert_eq!(rx.try_recv().unwrap(), stored(2, 1, 0));
        assert!(rx.try_recv().is_err());
        assert_eq!(again.docs().collect::<Vec<_>>(), [b"b", b"e"]);
        assert!(again.settle(&Delivered::default()).is_none());
        let acked: Vec<Acked> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(acked, [stored(1, 2, 0), stored(3, 3, 0)]);
    }

    /// Dead-lettered documents are counted as such, never as stored; a part
    /// with a document stored nowhere fails and is not acknowledged.
    #[test]
    fn settle_counts_dead_letters_and_fails_what_nothing_stored() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut batch = Batch::default();
        batch.push(part(&["a", "b"], 1, &tx));
        batch.push(part(&["dead letter of 2"], 2, &tx).with_dead_letters(1));
        batch.push(part(&["d", "e"], 3, &tx));
        let again = batch
            .settle(&Delivered {
                retry: vec![1],
                dead_lettered: vec![0],
                failed: vec![(4, "the dead-letter index refused it".into())],
                ..Delivered::default()
            })
            .unwrap();
        let acked: Vec<Acked> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(
            acked,
            [
                stored(2, 0, 1),
                Acked {
                    sequence: seq(3),
                    result: Err(Unstored {
                        reason: "the dead-letter index refused it".into(),
                        superseded: false,
                    })
                }
            ]
        );
        // "b" is retried and dead-lettered too: the part counts both.
        assert!(
            again
                .settle(&Delivered {
                    dead_lettered: vec![0],
                    ..Delivered::default()
                })
                .is_none()
        );
        assert_eq!(rx.try_recv().unwrap(), stored(1, 0, 2));
    }

    /// A part whose shard task has gone is dropped before it is sent.
    #[test]
    fn parts_of_a_gone_shard_are_abandoned() {
        let (tx, rx) = mpsc::unbounded_channel();
        let (kept_tx, _kept) = mpsc::unbounded_channel();
        let mut batch = Batch::default();
        batch.push(part(&["a", "b"], 1, &tx));
        batch.push(part(&["c"], 2, &kept_tx));
        drop(rx);
        assert_eq!(batch.abandon(), 2);
        assert_eq!(batch.docs().collect::<Vec<_>>(), [b"c"]);
        assert_eq!(batch.byte_len(), 1);
    }

    proptest! {
        /// However a batch is retried or dead-lettered, every part is
        /// acknowledged exactly once, with all of its documents, and only when
        /// none is left to retry.
        #[test]
        fn every_document_is_acknowledged_once(
            sizes in proptest::collection::vec(1usize..5, 1..12),
            retries in proptest::collection::vec(proptest::collection::vec(0usize..60, 0..8), 0..6),
            dead in proptest::collection::vec(0usize..60, 0..4),
        ) {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let mut batch = Batch::default();
            for (n, size) in sizes.iter().enumerate() {
                let docs: Vec<String> = (0..*size).map(|i| format!("{n}.{i}")).collect();
                let docs: Vec<&str> = docs.iter().map(String::as_str).collect();
                batch.push(part(&docs, n as u64 + 1, &tx));
            }
            let mut pending = Some(batch);
            let mut first = true;
            for indexes in retries.iter().chain(std::iter::once(&Vec::new())) {
                let Some(batch) = pending.take() else { break };
                let len = batch.len();
                let mut retry: Vec<usize> = indexes.iter().map(|i| i % len).collect();
                let dead_lettered: Vec<usize> = if first {
                    dead.iter().map(|i| i % len).filter(|i| !retry.contains(i)).collect()
                } else {
                    Vec::new()
                };
                retry.retain(|i| !dead_lettered.contains(i));
                first = false;
                pending = batch.settle(&Delivered { retry, dead_lettered, ..Delivered::default() });
            }
            prop_assert!(pending.is_none());
            let mut delivered = vec![Vec::new(); sizes.len()];
            while let Ok(acked) = rx.try_recv() {
                let n = acked.sequence.as_str().parse::<usize>().unwrap() - 1;
                let stored = acked.result.unwrap();
                delivered[n].push(stored.documents + stored.dead_lettered);
            }
            for (n, size) in sizes.iter().enumerate() {
                prop_assert_eq!(&delivered[n], &vec![*size]);
            }
        }
    }
}
