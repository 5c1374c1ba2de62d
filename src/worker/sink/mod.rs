//! Where documents go. A [`Sink`] supplies the [`Encoder`] that writes
//! documents in its wire form, and delivers batches of them; the [`driver`] gathers the parts every shard task
//! sends into batches within the configured limits, delivers them (retrying until
//! they are stored: nothing is dropped) and acknowledges each part to its shard,
//! whose watermark then lets the checkpoint move.

pub mod batch;
pub mod cut;
pub mod driver;
pub mod elasticsearch;
pub mod s3;
pub mod stdout;

use std::future::Future;

pub use batch::{Batch, Delivered, Doc, DocOut, Earlier, Encoded, ObjectMeta, Part, Span};

use super::document::Document;
use crate::contract::SequenceNumber;

/// Writes documents in a sink's wire form (a bulk action and source for a
/// search server, a JSON line for a file), straight from the document.
pub trait Encoder: Send + Sync + 'static {
    /// Writes one document.
    fn encode(&self, doc: &Document, out: &mut DocOut<'_>) -> Result<(), EncodeError>;

    /// Writes a dead letter (see [`crate::worker::dead_letter`]), addressed
    /// to where dead letters go: the dead-letter index when one is set, else
    /// where documents go.
    fn encode_dead_letter(
        &self,
        letter: &Document,
        out: &mut DocOut<'_>,
    ) -> Result<(), EncodeError> {
        self.encode(letter, out)
    }
}

/// One JSON document per line, as files, streams and objects hold them.
#[derive(Clone, Copy, Debug, Default)]
pub struct NdJson;

impl Encoder for NdJson {
    fn encode(&self, doc: &Document, out: &mut DocOut<'_>) -> Result<(), EncodeError> {
        let out = out.source();
        doc.write_json(out);
        out.push(b'\n');
        Ok(())
    }
}

/// A destination for documents.
pub trait Sink: Send + Sync + 'static {
    /// What writes documents for it.
    type Encoder: Encoder;

    /// Its encoder.
    fn encoder(&self) -> &Self::Encoder;

    /// Delivers a batch. `Ok` means every document is stored, or, when the
    /// destination refused it for good, stored as a dead letter by the sink
    /// ([`Delivered::dead_lettered`]), except those the sink asks to send
    /// again ([`Delivered::retry`]) and those nothing would store
    /// ([`Delivered::failed`]), which stop their shards. Nothing is dropped.
    fn deliver(&self, batch: &Batch) -> impl Future<Output = Result<Delivered, SinkError>> + Send;

    /// Whether the destination can be used now (reachable, its certificate
    /// trusted, its credentials taken), asked at start and again while it
    /// cannot be; what it said of itself. By default, nothing is asked.
    fn check(&self) -> impl Future<Output = Result<String, SinkError>> + Send {
        std::future::ready(Ok(String::new()))
    }

    /// Batches delivered at once. A sink that must keep each shard's order
    /// (a stream such as stdout) says 1.
    fn concurrency(&self) -> usize {
        1
    }

    /// How its documents are gathered into batches.
    fn batching(&self) -> Batching {
        Batching::Shared
    }

    /// For [`Batching::PerShard`]: the object that starts at record `first`
    /// of `shard`, if an earlier holder wrote one, so that a replay cuts its
    /// batch at the same record and adds no other object.
    fn resume_cut(
        &self,
        shard: &str,
        first: &SequenceNumber,
        meta: &ObjectMeta,
    ) -> impl Future<Output = Result<Option<Earlier>, SinkError>> + Send {
        let _ = (shard, first, meta);
        std::future::ready(Ok(None))
    }
}

/// How a sink's documents are gathered into batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batching {
    /// Parts of every shard share batches, cut by size and age (a search
    /// server's bulk requests).
    Shared,
    /// Each shard cuts its own batches of whole records, one in flight at a
    /// time, and cuts a replay where the batches an earlier holder delivered
    /// ended (objects named by their first record); see [`cut`].
    PerShard,
}

/// A document that cannot be put in the sink's wire form.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode document: {0}")]
pub struct EncodeError(pub String);

/// A delivery that failed as a whole; the driver retries it with backoff.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// A stable category for metrics and status (`io`, `unavailable`, `denied`, …).
    pub category: &'static str,
    /// What went wrong, for logs and status.
    pub message: String,
}

impl SinkError {
    /// An error of `category`.
    pub fn new(category: &'static str, message: impl Into<String>) -> SinkError {
        SinkError {
            category,
            message: message.into(),
        }
    }
}
