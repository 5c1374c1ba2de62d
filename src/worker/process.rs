//! One Kinesis record through decode and transforms (pure): the documents to
//! deliver, handed on one at a time, nothing (a control message), or a dead
//! letter for a record that cannot be decoded, takes more CPU than its budget
//! or becomes more than its share of documents, so a shard never wedges, never
//! drops silently, and no record costs more than its limits.

use std::cell::RefCell;
use std::time::Duration;

use super::dead_letter::{DeadLetter, Origin, Why};
use super::decode::cloudwatch::{Decoded, Limits, decode};
use super::document::{Document, from_data};
use super::transform::{Compiled, apply_each};
use crate::aws::kinesis::Record;

/// What a record turned into, its documents gathered (see [`process_each`]).
#[derive(Debug)]
pub enum Outcome {
    /// Documents to deliver, in event order.
    Documents(Vec<Document<'static>>),
    /// A CloudWatch Logs control message: nothing to deliver.
    Control,
    /// The record cannot be delivered as documents; deliver this instead.
    Rejected(Box<DeadLetter>),
}

/// What a record turned into, its documents handed on (see [`process_each`]).
#[derive(Debug)]
pub enum Streamed {
    /// Every document was handed on; the record held this many events.
    Events(usize),
    /// A CloudWatch Logs control message: nothing to deliver.
    Control,
    /// The record cannot be delivered as documents: what was handed on is to
    /// be dropped, and this delivered instead.
    Rejected(Box<DeadLetter>),
}

/// Decodes and transforms one record of `shard`, gathering its documents.
pub fn process(
    shard: &str,
    record: &Record,
    transforms: &[Compiled],
    limits: Limits,
    budget: Duration,
) -> Outcome {
    let mut docs = Vec::new();
    let streamed = process_each(shard, record, transforms, limits, budget, &mut |doc| {
        docs.push(doc.into_owned());
        Ok(())
    });
    match streamed {
        Streamed::Events(_) => Outcome::Documents(docs),
        Streamed::Control => Outcome::Control,
        Streamed::Rejected(letter) => Outcome::Rejected(letter),
    }
}

/// How often (in documents) the CPU time is looked at: reading a thread's
/// clock is a system call.
const CLOCK_EVERY: usize = 64;

/// The most of its inflated-payload buffer a thread keeps between records: a
/// rare record near the inflate limit does not hold its size per thread.
const KEEP_INFLATED: usize = 2 << 20;

thread_local! {
    /// Each preparing thread's buffer for inflated payloads, which the
    /// documents of its record borrow from while they are made.
    static INFLATED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Decodes and transforms one record of `shard`, handing each document to
/// `each` as it is made: no record's documents are held at once. `each` may
/// refuse one (it cannot be encoded, or the record grew past what it may
/// become), which makes the record a dead letter; so does CPU time past
/// `budget` (the thread's own, so a loaded machine does not make a record too
/// slow), looked at every few documents.
pub fn process_each(
    shard: &str,
    record: &Record,
    transforms: &[Compiled],
    limits: Limits,
    budget: Duration,
    each: &mut dyn FnMut(Document<'_>) -> Result<(), Why>,
) -> Streamed {
    with_inflate_buffer(|buffer| {
        let clock = ThreadClock::start();
        let data = match decode(&record.data, limits, buffer) {
            Ok(Decoded::Control) => return Streamed::Control,
            Ok(Decoded::Data(data)) => data,
            Err(error) => {
                let why = Why {
                    reason: error.category(),
                    message: error.to_string(),
                    status: None,
                    error_type: None,
                };
                return Streamed::Rejected(Box::new(dead_letter(shard, record, why)));
            }
        };
        let events = data.log_events.len();
        let mut handed = 0usize;
        let mut refused: Option<Why> = None;
        for doc in from_data(data) {
            let mut hand = |doc: Document<'_>| {
                handed += 1;
                if handed.is_multiple_of(CLOCK_EVERY) && clock.elapsed() > budget {
                    refused = Some(too_slow(budget, handed));
                    return false;
                }
                match each(doc) {
                    Ok(()) => true,
                    Err(why) => {
                        refused = Some(why);
                        false
                    }
                }
            };
            if !apply_each(transforms, doc, &mut hand) {
                break;
            }
        }
        if refused.is_none() && clock.elapsed() > budget {
            refused = Some(too_slow(budget, handed));
        }
        match refused {
            Some(why) => Streamed::Rejected(Box::new(dead_letter(shard, record, why))),
            None => Streamed::Events(events),
        }
    })
}

/// Runs `f` with this thread's buffer for inflated payloads, kept for the
/// next record unless it grew past [`KEEP_INFLATED`].
fn with_inflate_buffer<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    INFLATED.with_borrow_mut(|buffer| {
        let out = f(buffer);
        if buffer.capacity() > KEEP_INFLATED {
            *buffer = Vec::new();
        }
        out
    })
}

fn too_slow(budget: Duration, handed: usize) -> Why {
    Why {
        reason: "too_slow",
        message: format!(
            "processing took more than its budget of {budget:?} of CPU time (stopped after {handed} documents)"
        ),
        status: None,
        error_type: None,
    }
}

/// The CPU time the calling thread has used since it started.
struct ThreadClock(Duration);

impl ThreadClock {
    fn start() -> ThreadClock {
        ThreadClock(thread_cpu())
    }

    fn elapsed(&self) -> Duration {
        thread_cpu().saturating_sub(self.0)
    }
}

fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given and nothing else.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut now) } == 0;
    if !ok {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// The dead letter of a whole record of `shard`.
pub fn dead_letter(shard: &str, record: &Record, why: Why) -> DeadLetter {
    let origin = Origin {
        shard: shard.to_owned(),
        sequence: record.sequence.to_string(),
    };
    DeadLetter::record(origin, &record.data, record.arrival_millis, why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Transform, VpcFlowLogTransform};
    use crate::contract::SequenceNumber;
    use crate::worker::decode::cloudwatch::tests::gzip;

    const BUDGET: Duration = Duration::from_secs(60);

    fn record(data: Vec<u8>) -> Record {
        Record {
            sequence: SequenceNumber::parse(
                "49590338271490256608559692538361571095921575989136588898",
            )
            .unwrap(),
            data,
            arrival_millis: Some(1_795_635_868_000),
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
            BUDGET,
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
            process("s", &record(gzip(control)), &[], Limits::default(), BUDGET),
            Outcome::Control
        ));
    }

    #[test]
    fn undecodable_records_become_dead_letters_with_their_origin() {
        let corrupt = record(b"\x1f\x8b garbage".to_vec());
        let Outcome::Rejected(dead) =
            process("shardId-7", &corrupt, &[], Limits::default(), BUDGET)
        else {
            panic!("rejected");
        };
        let doc = dead.to_document(1_795_635_999_000);
        assert_eq!(
            doc["@id"],
            "deadletter-shardId-7-49590338271490256608559692538361571095921575989136588898"
        );
        assert_eq!(doc["@timestamp"], "2026-11-25T19:44:28.000Z", "its arrival");
        let about = &doc["@dead_letter"];
        assert_eq!(about["reason"], "corrupt_gzip");
        assert_eq!(about["shard_id"], "shardId-7");
        assert_eq!(about["data_base64"], "H4sgZ2FyYmFnZQ==");

        let bomb = record(gzip(&vec![b'a'; 2 << 20]));
        let Outcome::Rejected(dead) = process(
            "s",
            &bomb,
            &[],
            Limits {
                max_inflated_bytes: 1 << 20,
            },
            BUDGET,
        ) else {
            panic!("rejected");
        };
        assert_eq!(dead.to_document(0)["@dead_letter"]["reason"], "too_large");
    }

    /// A record whose events take longer than the budget stops at the next
    /// event and becomes a `too_slow` dead letter.
    #[test]
    fn a_record_over_its_budget_is_a_too_slow_dead_letter() {
        let events: Vec<String> = (0..1000)
            .map(|i| {
                format!(r#"{{"id":"{i}","timestamp":1418530010000,"message":"{{\"n\":{i}}}"}}"#)
            })
            .collect();
        let payload = format!(
            r#"{{"messageType":"DATA_MESSAGE","owner":"1","logGroup":"g","logStream":"s","subscriptionFilters":["f"],"logEvents":[{}]}}"#,
            events.join(",")
        );
        let transforms = [Compiled::new(&Transform::Json(
            crate::api::JsonTransform {},
        ))];
        let r = record(gzip(payload.as_bytes()));
        let Outcome::Rejected(dead) =
            process("s", &r, &transforms, Limits::default(), Duration::ZERO)
        else {
            panic!("too slow");
        };
        let doc = dead.to_document(0);
        assert_eq!(doc["@dead_letter"]["reason"], "too_slow");
        assert!(
            doc["@dead_letter"]["message"]
                .as_str()
                .unwrap()
                .contains("CPU time"),
            "{doc:?}"
        );
        assert!(matches!(
            process("s", &r, &transforms, Limits::default(), BUDGET),
            Outcome::Documents(docs) if docs.len() == 1000
        ));
    }
}
