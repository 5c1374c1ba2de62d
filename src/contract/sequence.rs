//! Kinesis sequence numbers, as checkpoints store them and records carry them.

use std::cmp::Ordering;
use std::fmt;

/// A Kinesis sequence number: a decimal string of up to 128 digits, compared as a
/// number (they outgrow `u128`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SequenceNumber(String);

/// A sequence number that is not a plain decimal without leading zeros.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a Kinesis sequence number")]
pub struct BadSequenceNumber(String);

impl SequenceNumber {
    /// Parses a sequence number as Kinesis writes it.
    pub fn parse(s: &str) -> Result<SequenceNumber, BadSequenceNumber> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s == "0" || !s.starts_with('0'));
        if ok {
            Ok(SequenceNumber(s.to_owned()))
        } else {
            Err(BadSequenceNumber(s.to_owned()))
        }
    }

    /// The decimal text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SequenceNumber {
    type Error = BadSequenceNumber;

    fn try_from(s: String) -> Result<SequenceNumber, BadSequenceNumber> {
        SequenceNumber::parse(&s)
    }
}

impl From<SequenceNumber> for String {
    fn from(s: SequenceNumber) -> String {
        s.0
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        // Without leading zeros, the longer number is the larger.
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: u64) -> SequenceNumber {
        SequenceNumber::parse(&n.to_string()).unwrap()
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        let big = "49590338271490256608559692538361571095921575989136588898";
        assert!(SequenceNumber::parse(big).unwrap() > seq(u64::MAX));
        assert!(seq(9) < seq(10));
        for bad in ["", "01", "12a", "-1", " 1"] {
            assert!(SequenceNumber::parse(bad).is_err(), "{bad:?}");
        }
    }
}
