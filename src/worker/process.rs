//! One Kinesis record through decode and transforms (pure): the documents to
//! deliver, nothing (a control message), or a dead letter for a record that cannot
//! be decoded, so a shard never wedges and never drops silently.

use base64::Engine;
use serde_json::{Value, json};

use super::decode::cloudwatch::{DecodeError, Decoded, Limits, decode};
use super::document::{Document, ID, TIMESTAMP, from_data};
use super::sink::EncodeError;
use super::transform::{Compiled, apply_into};
use crate::aws::kinesis::Record;
use crate::time::rfc3339_millis;

/// What a record turned into.
#[derive(Debug)]
pub enum Outcome {
    /// Documents to deliver, in event order.
    Documents(Vec<Document>),
    /// A CloudWatch Logs control message: nothing to deliver.
    Control,
    /// The record cannot be decoded; deliver this instead to the dead letter.
    Rejected(DeadLetter),
}

/// A record that could not be decoded, with where it came from.
#[derive(Debug)]
pub struct DeadLetter {
    /// The shard it was read from.
    pub shard: String,
    /// Its sequence number.
    pub sequence: String,
    /// Why it was rejected.
    pub error: Rejection,
    /// The record's data, kept when small enough to inspect.
    pub data: Option<Vec<u8>>,
}

/// Why a record goes to the dead letter.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// Its data is not a CloudWatch Logs payload.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A document made from it cannot be put in the sink's wire form.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl Rejection {
    /// A stable label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Rejection::Decode(e) => e.category(),
            Rejection::Encode(_) => "encode",
        }
    }
}

/// Records up to this size are kept whole in their dead letter.
const KEEP_DATA_UP_TO: usize = 64 << 10;

impl DeadLetter {
    /// The dead-letter document; its id is derived from shard and sequence, so a
    /// replay rewrites it rather than adding another.
    pub fn document(&self, now_millis: i64) -> Document {
        let mut doc = Document::new();
        doc.insert(
            ID,
            Value::String(format!("deadletter-{}-{}", self.shard, self.sequence)),
        );
        doc.insert(TIMESTAMP, Value::String(rfc3339_millis(now_millis)));
        doc.insert(
            "error",
            json!({"type": self.error.category(), "reason": self.error.to_string()}),
        );
        doc.insert("shard_id", Value::String(self.shard.clone()));
        doc.insert("sequence_number", Value::String(self.sequence.clone()));
        if let Some(data) = &self.data {
            let encoded = base64::engine::general_purpose::STANDARD.encode(data);
            doc.insert("data_base64", Value::String(encoded));
        }
        doc
    }
}

/// Decodes and transforms one record of `shard`.
pub fn process(shard: &str, record: &Record, transforms: &[Compiled], limits: Limits) -> Outcome {
    match decode(&record.data, limits) {
        Ok(Decoded::Control) => Outcome::Control,
        Ok(Decoded::Data(data)) => {
            let mut docs = Vec::with_capacity(data.log_events.len());
            for doc in from_data(data) {
                apply_into(transforms, doc, &mut docs);
            }
            Outcome::Documents(docs)
        }
        Err(error) => Outcome::Rejected(DeadLetter::new(shard, record, error.into())),
    }
}

impl DeadLetter {
    /// The dead letter of `record` of `shard`.
    pub fn new(shard: &str, record: &Record, error: Rejection) -> DeadLetter {
        DeadLetter {
            shard: shard.to_owned(),
            sequence: record.sequence.to_string(),
            data: (record.data.len() <= KEEP_DATA_UP_TO).then(|| record.data.clone()),
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Transform, VpcFlowLogTransform};
    use crate::worker::checkpoint::watermark::SequenceNumber;
    use crate::worker::decode::cloudwatch::tests::gzip;

    fn record(data: Vec<u8>) -> Record {
        Record {
            sequence: SequenceNumber::parse(
                "49590338271490256608559692538361571095921575989136588898",
            )
            .unwrap(),
            data,
        }
    }

    #[test]
    fn data_becomes_transformed_documents_in_order() {
        let payload = r#"{"messageType":"DATA_MESSAGE","owner":"123456789012","logGroup":"/aws/vpc/flow","logStream":"eni-1","subscriptionFilters":["f"],"logEvents":[
            {"id":"1","timestamp":1418530010000,"message":"2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK"},
            {"id":"2","timestamp":1418530011000,"message":"2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK"}]}"#;
        let transforms = [Compiled::new(&Transform::VpcFlowLog(
            VpcFlowLogTransform::default(),
        ))];
        let Outcome::Documents(docs) = process(
            "shardId-0",
            &record(gzip(payload.as_bytes())),
            &transforms,
            Limits::default(),
        ) else {
            panic!("documents");
        };
        assert_eq!(docs.len(), 2);
        assert_eq!(
            (docs[0]["@id"].as_str(), docs[0]["action"].as_str()),
            (Some("1"), Some("ACCEPT"))
        );
        assert_eq!(
            (docs[1]["@id"].as_str(), docs[1]["dstport"].as_u64()),
            (Some("2"), Some(3389))
        );
        assert_eq!(docs[0]["@log_group"], "/aws/vpc/flow");
    }

    #[test]
    fn control_messages_deliver_nothing() {
        let control = br#"{"messageType":"CONTROL_MESSAGE","owner":"CloudwatchLogs","logGroup":"","logStream":"","subscriptionFilters":[],"logEvents":[]}"#;
        assert!(matches!(
            process("s", &record(gzip(control)), &[], Limits::default()),
            Outcome::Control
        ));
    }

    #[test]
    fn undecodable_records_become_dead_letters_with_their_origin() {
        let corrupt = record(b"\x1f\x8b garbage".to_vec());
        let Outcome::Rejected(dead) = process("shardId-7", &corrupt, &[], Limits::default()) else {
            panic!("rejected");
        };
        let doc = dead.document(1_795_635_868_711);
        assert_eq!(
            doc["@id"],
            "deadletter-shardId-7-49590338271490256608559692538361571095921575989136588898"
        );
        assert_eq!(doc["error"]["type"], "corrupt_gzip");
        assert_eq!(doc["shard_id"], "shardId-7");
        assert_eq!(doc["data_base64"], "H4sgZ2FyYmFnZQ==");

        let bomb = record(gzip(&vec![b'a'; 2 << 20]));
        let Outcome::Rejected(dead) = process(
            "s",
            &bomb,
            &[],
            Limits {
                max_inflated_bytes: 1 << 20,
            },
        ) else {
            panic!("rejected");
        };
        assert_eq!(dead.document(0)["error"]["type"], "too_large");
    }
}
