//! The controller: makes AWS and the cluster match each LogSubscription.

pub mod error;
pub mod plan;
pub mod resources;
pub mod status;
