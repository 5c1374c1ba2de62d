//! Where records come from.

pub mod kinesis;
