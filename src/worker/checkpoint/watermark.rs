//! The checkpoint of a shard is a watermark: the highest sequence number at and
//! below which every record read has been fully acknowledged by the sink. Acks may
//! arrive in any order; the watermark never passes a record still in flight.

use std::collections::VecDeque;

use crate::contract::SequenceNumber;

/// Misuse of a watermark: a bug in the caller, reported rather than ignored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WatermarkError {
    /// Records must be registered in increasing sequence order.
    #[error("record {read} read after {last}: a shard's records arrive in order")]
    OutOfOrder {
        /// The record just read.
        read: SequenceNumber,
        /// The last record read before it.
        last: SequenceNumber,
    },
    /// An ack for a record that is not in flight.
    #[error("ack for {0}, which is not in flight")]
    UnknownAck(SequenceNumber),
}

#[derive(Debug)]
struct InFlight {
    sequence: SequenceNumber,
    /// Acks still awaited: one per document the record produced.
    awaiting: usize,
}

/// The watermark of one shard.
#[derive(Debug, Default)]
pub struct Watermark {
    in_flight: VecDeque<InFlight>,
    checkpoint: Option<SequenceNumber>,
    last_read: Option<SequenceNumber>,
}

impl Watermark {
    /// A watermark resuming after `checkpoint` (None for a shard read from the start).
    pub fn new(checkpoint: Option<SequenceNumber>) -> Watermark {
        Watermark {
            last_read: checkpoint.clone(),
            checkpoint,
            in_flight: VecDeque::new(),
        }
    }

    /// Registers a record that needs `acks` acknowledgements (0: nothing to
    /// deliver, e.g. a control message, so it is done at once).
    pub fn read(&mut self, sequence: SequenceNumber, acks: usize) -> Result<(), WatermarkError> {
        if let Some(last) = &self.last_read
            && sequence <= *last
        {
            return Err(WatermarkError::OutOfOrder {
                read: sequence,
                last: last.clone(),
            });
        }
        self.last_read = Some(sequence.clone());
        self.in_flight.push_back(InFlight {
            sequence,
            awaiting: acks,
        });
        self.advance();
        Ok(())
    }

    /// One acknowledgement (delivered or dead-lettered) for a record.
    pub fn ack(&mut self, sequence: &SequenceNumber) -> Result<(), WatermarkError> {
        let index = self
            .in_flight
            .binary_search_by(|r| r.sequence.cmp(sequence))
            .map_err(|_| WatermarkError::UnknownAck(sequence.clone()))?;
        let record = &mut self.in_flight[index];
        if record.awaiting == 0 {
            return Err(WatermarkError::UnknownAck(sequence.clone()));
        }
        record.awaiting -= 1;
        self.advance();
        Ok(())
    }

    fn advance(&mut self) {
        while self.in_flight.front().is_some_and(|r| r.awaiting == 0) {
            self.checkpoint = self.in_flight.pop_front().map(|r| r.sequence);
        }
    }

    /// The sequence number it is safe to checkpoint: every record up to it is done.
    pub fn checkpoint(&self) -> Option<&SequenceNumber> {
        self.checkpoint.as_ref()
    }

    /// Records read and not yet fully acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn seq(n: u64) -> SequenceNumber {
        SequenceNumber::parse(&n.to_string()).unwrap()
    }

    #[test]
    fn out_of_order_acks_hold_the_watermark() {
        let mut w = Watermark::new(None);
        for n in 1..=3 {
            w.read(seq(n), 2).unwrap();
        }
        w.ack(&seq(2)).unwrap();
        w.ack(&seq(2)).unwrap();
        assert_eq!(w.checkpoint(), None, "record 1 is still in flight");
        w.ack(&seq(1)).unwrap();
        assert_eq!(w.checkpoint(), None, "record 1 awaits one more ack");
        w.ack(&seq(1)).unwrap();
        assert_eq!(w.checkpoint(), Some(&seq(2)));
        w.read(seq(4), 0).unwrap();
        assert_eq!(
            w.checkpoint(),
            Some(&seq(2)),
            "record 3 blocks the empty record 4"
        );
        w.ack(&seq(3)).unwrap();
        w.ack(&seq(3)).unwrap();
        assert_eq!(w.checkpoint(), Some(&seq(4)));
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn misuse_is_an_error() {
        let mut w = Watermark::new(Some(seq(10)));
        assert!(matches!(
            w.read(seq(10), 1),
            Err(WatermarkError::OutOfOrder { .. })
        ));
        w.read(seq(11), 1).unwrap();
        assert_eq!(w.ack(&seq(12)), Err(WatermarkError::UnknownAck(seq(12))));
        w.ack(&seq(11)).unwrap();
        assert_eq!(w.ack(&seq(11)), Err(WatermarkError::UnknownAck(seq(11))));
    }

    proptest! {
        /// Whatever the ack order, the watermark never passes a record with an
        /// ack outstanding, and ends at the last record once all are acked.
        #[test]
        fn never_passes_an_unacked_record(
            acks_per_record in proptest::collection::vec(0usize..4, 1..40),
            order_seed in proptest::collection::vec(proptest::num::usize::ANY, 0..200),
        ) {
            let mut w = Watermark::new(None);
            let mut pending: Vec<(u64, usize)> = Vec::new();
            for (i, acks) in acks_per_record.iter().enumerate() {
                let n = (i as u64 + 1) * 7;
                w.read(seq(n), *acks).unwrap();
                pending.extend(std::iter::repeat_n((n, 1), *acks));
            }
            // Ack in a shuffled order.
            let mut order: Vec<usize> = (0..pending.len()).collect();
            for (i, s) in order_seed.iter().enumerate() {
                let len = order.len();
                if len > 1 { order.swap(i % len, s % len); }
            }
            let mut outstanding: std::collections::BTreeMap<u64, usize> = std::collections::BTreeMap::new();
            for (n, _) in &pending { *outstanding.entry(*n).or_default() += 1; }
            for i in order {
                let n = pending[i].0;
                w.ack(&seq(n)).unwrap();
                let left = outstanding.get_mut(&n).unwrap();
                *left -= 1;
                if let Some(cp) = w.checkpoint() {
                    let cp: u64 = cp.as_str().parse().unwrap();
                    for (m, left) in &outstanding {
                        prop_assert!(*m > cp || *left == 0, "checkpoint {cp} passes {m} with {left} acks due");
                    }
                }
            }
            let last = acks_per_record.len() as u64 * 7;
            prop_assert_eq!(w.checkpoint(), Some(&seq(last)));
        }
    }
}
