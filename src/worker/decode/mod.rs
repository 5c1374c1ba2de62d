//! Turning Kinesis records into log events.

pub mod cloudwatch;
