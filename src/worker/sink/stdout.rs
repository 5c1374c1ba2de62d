//! NDJSON on standard output, one document a line: for `kubectl logs` debugging.

use std::io::Write;
use std::sync::Mutex;

use super::{Batch, Delivered, NdJson, Sink, SinkError};

/// Writes each batch to a stream and flushes it; a write that returns is delivered.
pub struct Stdout<W = std::io::Stdout> {
    out: Mutex<W>,
}

impl Stdout {
    /// The process's standard output.
    pub fn new() -> Stdout {
        Stdout::to(std::io::stdout())
    }
}

impl Default for Stdout {
    fn default() -> Self {
        Stdout::new()
    }
}

impl<W> Stdout<W> {
    /// Any writer, e.g. a buffer in tests.
    pub fn to(out: W) -> Stdout<W> {
        Stdout {
            out: Mutex::new(out),
        }
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.out.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

impl<W: Write + Send + 'static> Sink for Stdout<W> {
    type Encoder = NdJson;

    fn encoder(&self) -> &NdJson {
        &NdJson
    }

    async fn deliver(&self, batch: &Batch) -> Result<Delivered, SinkError> {
        // Blocking writes to a pipe: fine here, the driver is the only writer and
        // a full pipe is exactly the backpressure wanted.
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        for chunk in batch.chunks() {
            out.write_all(chunk)
                .map_err(|e| SinkError::new("io", e.to_string()))?;
        }
        out.flush()
            .map_err(|e| SinkError::new("io", e.to_string()))?;
        Ok(Delivered::default())
    }
}
