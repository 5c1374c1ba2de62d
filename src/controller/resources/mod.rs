//! The Kubernetes objects a LogSubscription owns (pure builders): the workers'
//! ServiceAccount, Role and RoleBinding (their Leases only), the ConfigMap with
//! their configuration, and the Deployment that runs them.

pub mod config;
pub mod rbac;
pub mod workload;
