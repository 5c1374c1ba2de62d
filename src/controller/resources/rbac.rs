//! What logsub may do in Kubernetes: the ClusterRoles that the README
//! documents and installs reference (`logsub rbac` prints them).
//!
//! - `logsub-controller`, bound with a ClusterRoleBinding, serves every
//!   namespace; with a RoleBinding, one. It writes no Lease: it reads the
//!   workers' and may `bind` only `logsub-worker`.
//! - `logsub-controller-policies` reads the cluster-scoped
//!   LogSubscriptionPolicies, bound cluster-wide either way.
//! - `logsub-controller-election` writes the leader Lease, bound with a
//!   RoleBinding in the controller's own namespace only.
//! - `logsub-worker`: the workers' shard Leases. The controller binds it per
//!   LogSubscription with a RoleBinding whose subjects are the workers and the
//!   controller itself (which deletes the checkpoints of a stream it deletes),
//!   so Lease writes exist only in namespaces that run workers.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The name of the controller's ClusterRole.
pub const CLUSTER_ROLE: &str = "logsub-controller";
/// The name of the ClusterRole that reads the policies.
pub const POLICY_READER_ROLE: &str = "logsub-controller-policies";
/// The name of the ClusterRole that writes the leader Lease.
pub const ELECTION_ROLE: &str = "logsub-controller-election";
/// The name of the workers' ClusterRole (the chart's is `<release>-worker`).
pub const WORKER_ROLE: &str = "logsub-worker";

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    }
}

fn named(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some([("app.kubernetes.io/name".to_owned(), "logsub".to_owned())].into()),
            ..ObjectMeta::default()
        },
        rules: Some(rules),
        ..ClusterRole::default()
    }
}

/// The controller's ClusterRole: exactly what it calls, nothing more, for
/// workers bound to the ClusterRole `worker_role`.
pub fn cluster_role(worker_role: &str) -> ClusterRole {
    named(
        CLUSTER_ROLE,
        vec![
            // Watch LogSubscriptions; the finalizer is added and removed by patch.
            rule(
                "logsub.io",
                &["logsubscriptions"],
                &["get", "list", "watch", "patch"],
            ),
            rule("logsub.io", &["logsubscriptions/status"], &["get", "patch"]),
            // The workers' objects, by server-side apply (create when missing);
            // the workers are stopped before their checkpoints are deleted.
            rule(
                "apps",
                &["deployments"],
                &["get", "list", "watch", "create", "patch", "delete"],
            ),
            // Watched (logsub's only, by label) so that one deleted or
            // edited is put back at the next status refresh.
            rule(
                "",
                &["serviceaccounts", "configmaps"],
                &["get", "list", "watch", "create", "patch"],
            ),
            // The workers' RoleBinding, watched the same way.
            rule(
                "rbac.authorization.k8s.io",
                &["rolebindings"],
                &["get", "list", "watch", "create", "patch"],
            ),
            // Binding the workers' ClusterRole, and no other, is what lets
            // the controller grant Lease writes without holding them.
            PolicyRule {
                resource_names: Some(vec![worker_role.to_owned()]),
                ..rule("rbac.authorization.k8s.io", &["clusterroles"], &["bind"])
            },
            // The workers' delivery health.
            rule(
                "coordination.k8s.io",
                &["leases"],
                &["get", "list", "watch"],
            ),
            rule("events.k8s.io", &["events"], &["create", "patch"]),
            // Namespace labels decide which policies select a namespace
            // (through a RoleBinding: only `get` of that namespace itself).
            rule("", &["namespaces"], &["get", "list", "watch"]),
        ],
    )
}

/// The workers' ClusterRole: their shard Leases, nothing more.
pub fn worker_role(name: &str) -> ClusterRole {
    named(
        name,
        vec![rule(
            "coordination.k8s.io",
            &["leases"],
            &["get", "list", "watch", "create", "update", "delete"],
        )],
    )
}

/// Writes the leader Lease: bound in the controller's namespace only.
pub fn election_role() -> ClusterRole {
    named(
        ELECTION_ROLE,
        vec![rule(
            "coordination.k8s.io",
            &["leases"],
            &["get", "create", "update"],
        )],
    )
}

/// Reads the LogSubscriptionPolicies, which are cluster-scoped: bound with a
/// ClusterRoleBinding even when the controller watches one namespace.
pub fn policy_reader_role() -> ClusterRole {
    named(
        POLICY_READER_ROLE,
        vec![rule(
            "logsub.io",
            &["logsubscriptionpolicies"],
            &["get", "list", "watch"],
        )],
    )
}

/// Every ClusterRole logsub uses, under their default names: the
/// controller's, the policy reader, the election's and the workers'.
pub fn cluster_roles() -> [ClusterRole; 4] {
    [
        cluster_role(WORKER_ROLE),
        policy_reader_role(),
        election_role(),
        worker_role(WORKER_ROLE),
    ]
}

/// The RBAC subject of an authenticated `username`: a ServiceAccount
/// (`system:serviceaccount:<namespace>:<name>`) or a user.
pub fn subject(username: &str) -> Subject {
    match username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
    {
        Some((namespace, name)) => Subject {
            kind: "ServiceAccount".into(),
            name: name.into(),
            namespace: Some(namespace.into()),
            ..Subject::default()
        },
        None => Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: username.into(),
            ..Subject::default()
        },
    }
}

/// The ClusterRoles as YAML.
pub fn cluster_role_yaml() -> String {
    let mut out = "# Generated by `logsub rbac`; do not edit.\n".to_owned();
    for role in cluster_roles() {
        // Serializing plain strings and lists cannot fail.
        let yaml = serde_saphyr::to_string(&role).expect("the ClusterRole serializes");
        out.push_str("---\n");
        out.push_str(&yaml);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(role: &ClusterRole, group: &str, resource: &str, verb: &str) -> bool {
        role.rules.iter().flatten().any(|r| {
            r.api_groups.iter().flatten().any(|g| g == group)
                && r.resources.iter().flatten().any(|x| x == resource)
                && r.verbs.iter().any(|v| v == verb)
        })
    }

    /// A token of the controller cannot rewrite node heartbeats or another
    /// component's leader Lease: it writes Leases only where it bound the
    /// workers' role, and may bind no other.
    #[test]
    fn the_controller_writes_no_lease_and_binds_only_the_workers_role() {
        let controller = cluster_role("team-worker");
        for verb in ["create", "update", "patch", "delete", "deletecollection"] {
            assert!(
                !grants(&controller, "coordination.k8s.io", "leases", verb),
                "{verb}"
            );
        }
        assert!(!grants(
            &controller,
            "rbac.authorization.k8s.io",
            "roles",
            "create"
        ));
        let bind: Vec<_> = controller
            .rules
            .iter()
            .flatten()
            .filter(|r| {
                r.verbs
                    .iter()
                    .any(|v| v == "bind" || v == "escalate" || v == "*")
            })
            .collect();
        assert_eq!(bind.len(), 1);
        assert_eq!(
            bind[0].resource_names.as_deref(),
            Some(&["team-worker".to_owned()][..])
        );
        assert!(grants(
            &worker_role("w"),
            "coordination.k8s.io",
            "leases",
            "update"
        ));
        assert!(grants(
            &election_role(),
            "coordination.k8s.io",
            "leases",
            "update"
        ));
    }

    #[test]
    fn a_service_account_is_bound_as_one_and_anyone_else_as_a_user() {
        let sa = subject("system:serviceaccount:logsub-system:logsub");
        assert_eq!(
            (sa.kind.as_str(), sa.namespace.as_deref(), sa.name.as_str()),
            ("ServiceAccount", Some("logsub-system"), "logsub")
        );
        let user = subject("kubernetes-admin");
        assert_eq!(
            (user.kind.as_str(), user.name.as_str()),
            ("User", "kubernetes-admin")
        );
        assert_eq!(subject("system:serviceaccount:odd").kind, "User");
    }
}
