//! The controller: makes AWS and the cluster match each LogSubscription.

pub mod resources;
