//! The workers' objects: ServiceAccount, RoleBinding (of the workers'
//! ClusterRole: their shard Leases, nothing more), ConfigMap (their
//! configuration) and Deployment.
//! Each carries the LogSubscription as its controller owner, so Kubernetes
//! deletes them with it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, ServiceAccount,
    Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use sha2::{Digest, Sha256};

use super::config::{secret_dir, secrets};
use crate::api::LogSubscription;
use crate::contract::config::WorkerConfig;

/// Where the worker's configuration file is mounted.
pub const CONFIG_DIR: &str = "/etc/logsub";
/// The configuration file's name in the ConfigMap.
pub const CONFIG_FILE: &str = "worker.yaml";
/// The pod template annotation holding the hash of the configuration and of
/// the pod as built: a change of either (the spec's, or the controller's way
/// of running workers, such as their admin address) rolls the workers.
pub const CONFIG_HASH: &str = "logsub.io/config-hash";
/// How the controller runs its workers, the same for every LogSubscription.
#[derive(Clone, Debug, PartialEq)]
pub struct Runtime {
    /// The image: the controller's own.
    pub image: String,
    /// Environment given before the spec's own (which may override it).
    pub env: Vec<EnvVar>,
    /// Where the worker serves `/metrics`, `/healthz` and `/readyz`:
    /// `0.0.0.0:8080` in a pod network.
    pub admin_addr: std::net::SocketAddr,
    /// The ClusterRole the workers are bound to.
    pub worker_role: String,
    /// The controller's own identity, bound beside the workers: it deletes
    /// their Leases with the stream they checkpoint.
    pub controller: Option<Subject>,
}

/// The objects of one LogSubscription's workers.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Their identity (annotated for IRSA as the spec says).
    pub service_account: ServiceAccount,
    /// The workers' ClusterRole (their Leases), granted in this namespace
    /// to the ServiceAccount and the controller.
    pub role_binding: RoleBinding,
    /// Their configuration.
    pub config_map: ConfigMap,
    /// The workers.
    pub deployment: Deployment,
}

/// Why the objects cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    /// The LogSubscription has no uid or namespace yet (it was not read from the API server).
    #[error("the LogSubscription has no {0} yet")]
    Missing(&'static str),
    /// The sink cannot be configured (a spec that validation would refuse).
    #[error("spec.sink.{0}")]
    Sink(crate::contract::config::SinkConfigError),
}

/// What the workers' RoleBinding adds to their objects' name.
pub const BINDING_SUFFIX: &str = "-leases";

/// The name of the workers' objects: `<subscription>-worker`.
pub fn workload_name(lsub: &LogSubscription) -> String {
    format!(
        "{}-worker",
        lsub.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The labels of the workers' objects; the first three select the pods.
pub fn labels(lsub: &LogSubscription) -> BTreeMap<String, String> {
    let name = lsub.metadata.name.clone().unwrap_or_default();
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "logsub".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), name.clone()),
        (
            "app.kubernetes.io/component".to_owned(),
            "worker".to_owned(),
        ),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "logsub".to_owned(),
        ),
        (crate::contract::lease::SUBSCRIPTION_LABEL.to_owned(), name),
    ])
}

fn selector(lsub: &LogSubscription) -> BTreeMap<String, String> {
    labels(lsub).into_iter().take(3).collect()
}

/// The hash of a rendered configuration (hex SHA-256).
pub fn config_hash(yaml: &str) -> String {
    Sha256::digest(yaml.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The metadata every worker object of `lsub` carries.
fn object_meta(lsub: &LogSubscription) -> Result<ObjectMeta, BuildError> {
    let owner = lsub
        .controller_owner_ref(&())
        .ok_or(BuildError::Missing("uid"))?;
    let namespace = lsub
        .metadata
        .namespace
        .clone()
        .ok_or(BuildError::Missing("namespace"))?;
    Ok(ObjectMeta {
        name: Some(workload_name(lsub)),
        namespace: Some(namespace),
        labels: Some(labels(lsub)),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    })
}

/// The workers' RoleBinding alone: in place before the controller touches
/// their Leases.
pub fn workers_binding(
    lsub: &LogSubscription,
    runtime: &Runtime,
) -> Result<RoleBinding, BuildError> {
    Ok(role_binding(object_meta(lsub)?, runtime))
}

/// Builds the workers' objects for `lsub`, run as `runtime` says, configured
/// with `config`.
pub fn workload(
    lsub: &LogSubscription,
    runtime: &Runtime,
    config: &WorkerConfig,
) -> Result<Workload, BuildError> {
    let base = object_meta(lsub)?;
    let name = workload_name(lsub);
    let meta = |annotations: Option<BTreeMap<String, String>>| ObjectMeta {
        annotations,
        ..base.clone()
    };
    let yaml = config.to_yaml();
    let hash = config_hash(&yaml);
    let sa_annotations = lsub
        .spec
        .workers
        .service_account
        .as_ref()
        .map(|sa| sa.annotations.clone())
        .filter(|a| !a.is_empty());
    Ok(Workload {
        service_account: ServiceAccount {
            metadata: meta(sa_annotations),
            // The token is mounted by the pod spec, where it is needed.
            automount_service_account_token: Some(false),
            ..ServiceAccount::default()
        },
        role_binding: role_binding(meta(None), runtime),
        config_map: ConfigMap {
            metadata: meta(None),
            data: Some(BTreeMap::from([(CONFIG_FILE.to_owned(), yaml)])),
            ..ConfigMap::default()
        },
        deployment: deployment(lsub, meta(None), &name, runtime, &hash),
    })
}

/// Binds the workers' ClusterRole, in the namespace of `meta`, to the
/// workers' ServiceAccount (of `meta`'s name) and the controller.
fn role_binding(meta: ObjectMeta, runtime: &Runtime) -> RoleBinding {
    let worker = Subject {
        kind: "ServiceAccount".into(),
        name: meta.name.clone().unwrap_or_default(),
        namespace: meta.namespace.clone(),
        ..Subject::default()
    };
    // A name of its own: earlier releases bound a Role under the workers'
    // name, and a roleRef cannot change (nor could a rollback change it back).
    let name = meta.name.as_deref().map(|n| format!("{n}{BINDING_SUFFIX}"));
    RoleBinding {
        metadata: ObjectMeta { name, ..meta },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: runtime.worker_role.clone(),
        },
        subjects: Some(
            std::iter::once(worker)
                .chain(runtime.controller.clone())
                .collect(),
        ),
    }
}

/// The worker container's resources when the spec names none: a request that
/// schedules it, and a memory limit well above what it holds with a stalled
/// sink (the driver's buffer and one read per shard), so a leak is killed
/// rather than starving the node. No CPU limit: throttling a worker only
/// delays its lease renewals.
pub fn default_resources() -> ResourceRequirements {
    let quantity = |q: &str| Quantity(q.to_owned());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), quantity("100m")),
            ("memory".to_owned(), quantity("128Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), quantity("512Mi"))])),
        ..ResourceRequirements::default()
    }
}

fn deployment(
    lsub: &LogSubscription,
    metadata: ObjectMeta,
    name: &str,
    runtime: &Runtime,
    hash: &str,
) -> Deployment {
    let secrets = secrets(lsub);
    let mut volumes = vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: name.to_owned(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "config".into(),
        mount_path: CONFIG_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    for (i, secret) in secrets.iter().enumerate() {
        let volume = format!("secret-{i}");
        volumes.push(Volume {
            name: volume.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: volume,
            mount_path: secret_dir(secret),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        ..Probe::default()
    };
    let container = Container {
        name: "worker".into(),
        image: Some(runtime.image.clone()),
        args: Some(
            [
                "worker",
                "--config",
                &format!("{CONFIG_DIR}/{CONFIG_FILE}"),
                "--admin-addr",
                &runtime.admin_addr.to_string(),
            ]
            .map(String::from)
            .to_vec(),
        ),
        // Logsub's own variables come last and the spec's copies of them are
        // dropped (admission refuses them too): a later entry wins, and a
        // shared POD_NAME would give two workers one identity.
        env: Some(
            runtime
                .env
                .iter()
                .chain(
                    lsub.spec
                        .workers
                        .env
                        .iter()
                        .filter(|e| !crate::api::RESERVED_ENV.contains(&e.name.as_str())),
                )
                .cloned()
                .chain([
                    EnvVar {
                        name: "POD_NAME".into(),
                        value_from: Some(EnvVarSource {
                            field_ref: Some(ObjectFieldSelector {
                                field_path: "metadata.name".into(),
                                ..ObjectFieldSelector::default()
                            }),
                            ..EnvVarSource::default()
                        }),
                        ..EnvVar::default()
                    },
                    EnvVar {
                        name: "LOGSUB_LOG_FORMAT".into(),
                        value: Some("json".into()),
                        ..EnvVar::default()
                    },
                ])
                .collect(),
        ),
        ports: Some(vec![ContainerPort {
            name: Some("admin".into()),
            container_port: i32::from(runtime.admin_addr.port()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe("/readyz")),
        liveness_probe: Some(probe("/healthz")),
        resources: Some(
            lsub.spec
                .workers
                .resources
                .clone()
                .unwrap_or_else(default_resources),
        ),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let pod = pod_spec(name, container, volumes);
    Deployment {
        metadata,
        spec: DeploymentSpec {
            replicas: Some(lsub.spec.workers.replicas),
            selector: LabelSelector {
                match_labels: Some(selector(lsub)),
                ..LabelSelector::default()
            },
            // New workers take shards as old ones release them on SIGTERM.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                ..DeploymentStrategy::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(lsub)),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH.to_owned(),
                        template_hash(hash, &pod),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

/// The hash of the configuration's hash and the pod spec as built: what the
/// API server defaults in a Deployment makes it unfit to compare, this not.
fn template_hash(config: &str, pod: &PodSpec) -> String {
    let pod = serde_json::to_string(pod).unwrap_or_default();
    config_hash(&format!("{config}\n{pod}"))
}

/// Makes the workers' pod spec.
fn pod_spec(name: &str, container: Container, volumes: Vec<Volume>) -> PodSpec {
    PodSpec {
        service_account_name: Some(name.to_owned()),
        automount_service_account_token: Some(true),
        // A worker releases its leases after delivering what it holds.
        termination_grace_period_seconds: Some(30),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            ..PodSecurityContext::default()
        }),
        containers: vec![container],
        volumes: Some(volumes),
        ..PodSpec::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::resources::config::worker_config;
    use kube::ResourceExt;

    fn lsub() -> LogSubscription {
        let mut lsub: LogSubscription = serde_saphyr::from_str(
            r#"
apiVersion: logsub.io/v1alpha1
kind: LogSubscription
metadata: {name: vpc-flow, namespace: observability, uid: 6f1c2a9e-0000-4000-8000-000000000001}
spec:
  source: {logGroups: {names: [/aws/vpc/flow]}, roleArn: "arn:aws:iam::123456789012:role/r"}
  stream: {existing: {name: flow}}
  sink:
    elasticsearch:
      endpoint: https://search:9200
      index: cwl-%Y.%m.%d
      auth: {apiKey: {secretRef: {name: es-key}}}
  workers:
    replicas: 3
    serviceAccount: {annotations: {eks.amazonaws.com/role-arn: "arn:aws:iam::123456789012:role/worker"}}
    env: [{name: HTTPS_PROXY, value: "http://proxy:3128"}]
"#,
        )
        .unwrap();
        lsub.metadata.namespace = Some("observability".into());
        lsub
    }

    fn built(lsub: &LogSubscription) -> Workload {
        let config = worker_config(lsub, "arn:aws:kinesis:us-east-1:1:stream/flow").unwrap();
        workload(lsub, &runtime(), &config).unwrap()
    }

    fn runtime() -> Runtime {
        Runtime {
            image: "logsub:1.0".into(),
            env: vec![EnvVar {
                name: "AWS_ENDPOINT_URL_KINESIS".into(),
                value: Some("http://kinesis.local".into()),
                ..EnvVar::default()
            }],
            admin_addr: "0.0.0.0:8080".parse().unwrap(),
            worker_role: "logsub-worker".into(),
            controller: Some(Subject {
                kind: "ServiceAccount".into(),
                name: "logsub".into(),
                namespace: Some("logsub-system".into()),
                ..Subject::default()
            }),
        }
    }

    #[test]
    fn every_object_is_owned_named_and_labelled() {
        let w = built(&lsub());
        assert_eq!(
            w.role_binding.metadata.name.as_deref(),
            Some("vpc-flow-worker-leases")
        );
        for meta in [
            &w.service_account.metadata,
            &w.config_map.metadata,
            &w.deployment.metadata,
        ] {
            assert_eq!(meta.name.as_deref(), Some("vpc-flow-worker"));
            assert_eq!(meta.namespace.as_deref(), Some("observability"));
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.controller),
                ("LogSubscription", Some(true))
            );
            assert_eq!(
                meta.labels.as_ref().unwrap()["logsub.io/subscription"],
                "vpc-flow"
            );
        }
        assert_eq!(
            w.service_account.metadata.annotations.as_ref().unwrap()["eks.amazonaws.com/role-arn"],
            "arn:aws:iam::123456789012:role/worker"
        );
    }

    /// A LogSubscription whose namespace and name are both at Kubernetes'
    /// limit (63): every name and label logsub derives stays valid, and the
    /// names it gives in AWS within AWS' limits.
    #[test]
    fn names_at_their_length_limit_make_valid_objects() {
        let mut long = lsub();
        let namespace = format!("n{}", "-x".repeat(31));
        let name = format!("s{}", "-y".repeat(31));
        assert_eq!((namespace.len(), name.len()), (63, 63));
        long.metadata.namespace = Some(namespace);
        long.metadata.name = Some(name);
        assert!(long.validate_names().is_ok());
        let w = built(&long);
        let subdomain = regex::Regex::new(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$").unwrap();
        let label = regex::Regex::new(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$").unwrap();
        let template = w.deployment.spec.template.metadata.as_ref();
        let selector = &w.deployment.spec.selector;
        let labels = [
            &w.role_binding.metadata.labels,
            &w.service_account.metadata.labels,
            &w.config_map.metadata.labels,
            &w.deployment.metadata.labels,
            &template.unwrap().labels,
            &selector.match_labels,
        ];
        for (key, value) in labels.into_iter().flatten().flatten() {
            assert!(
                value.len() <= 63 && label.is_match(value),
                "label {key}={value}"
            );
        }
        for meta in [
            &w.role_binding.metadata,
            &w.service_account.metadata,
            &w.config_map.metadata,
            &w.deployment.metadata,
        ] {
            let name = meta.name.as_deref().unwrap();
            assert!(name.len() <= 253 && subdomain.is_match(name), "{name}");
        }
        // CloudWatch Logs' filter names hold 512; STS session names 64.
        assert!(long.filter_name().len() <= 512);
        let session = crate::controller::session_name(&long, "");
        assert!(session.len() <= 64, "{session}");
        // Its shard leases: `<name>-<stream key>-<shard id>`.
        let lease = format!("{}-0123456789-shardid-000000000000", long.name_any());
        assert!(lease.len() <= 253 && subdomain.is_match(&lease), "{lease}");
    }

    #[test]
    fn the_workers_and_the_controller_are_bound_to_the_workers_cluster_role() {
        let w = built(&lsub());
        let role = &w.role_binding.role_ref;
        assert_eq!(
            (role.kind.as_str(), role.name.as_str()),
            ("ClusterRole", "logsub-worker")
        );
        let subjects: Vec<_> = w
            .role_binding
            .subjects
            .iter()
            .flatten()
            .map(|s| (s.namespace.as_deref().unwrap_or_default(), s.name.as_str()))
            .collect();
        assert_eq!(
            subjects,
            [
                ("observability", "vpc-flow-worker"),
                ("logsub-system", "logsub")
            ]
        );
    }

    #[test]
    fn the_deployment_runs_locked_down_workers_with_their_config_and_secrets() {
        let w = built(&lsub());
        let spec = &w.deployment.spec;
        assert_eq!(spec.replicas, Some(3));
        let pod = spec.template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("logsub:1.0"));
        assert_eq!(
            c.args.as_ref().unwrap()[..3],
            ["worker", "--config", "/etc/logsub/worker.yaml"]
        );
        // The controller's settings first, so the spec's own can override
        // them; logsub's own last, so nothing overrides them.
        let env: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        assert_eq!(
            env,
            [
                "AWS_ENDPOINT_URL_KINESIS",
                "HTTPS_PROXY",
                "POD_NAME",
                "LOGSUB_LOG_FORMAT"
            ]
        );
        assert_eq!(c.resources, Some(default_resources()), "limits by default");
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(
            (
                sc.run_as_non_root,
                sc.read_only_root_filesystem,
                sc.allow_privilege_escalation
            ),
            (Some(true), Some(true), Some(false))
        );
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..])
        );
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        let mounts: Vec<(&str, &str)> = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| (m.name.as_str(), m.mount_path.as_str()))
            .collect();
        assert_eq!(
            mounts,
            [
                ("config", "/etc/logsub"),
                ("secret-0", "/etc/logsub/secrets/es-key")
            ]
        );
        // The Secret is mounted, never copied into the ConfigMap.
        let yaml = &w.config_map.data.as_ref().unwrap()["worker.yaml"];
        assert!(yaml.contains("/etc/logsub/secrets/es-key/apiKey"), "{yaml}");
        let selector = spec.selector.match_labels.as_ref().unwrap();
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
    }

    /// A spec that names the worker's identity variable cannot give two
    /// workers one identity (admission refuses it; an object admitted before
    /// that rule existed still cannot).
    #[test]
    fn the_spec_cannot_override_the_workers_identity() {
        let mut lsub = lsub();
        lsub.spec.workers.env.push(EnvVar {
            name: "POD_NAME".into(),
            value: Some("everyone".into()),
            ..EnvVar::default()
        });
        let w = built(&lsub);
        let env = w.deployment.spec.template.spec.as_ref().unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        let pod_name: Vec<&EnvVar> = env.iter().filter(|e| e.name == "POD_NAME").collect();
        assert_eq!(pod_name.len(), 1);
        assert!(pod_name[0].value_from.is_some(), "from metadata.name");
        assert!(lsub.spec.validate().is_err(), "and validate says why");
    }

    #[test]
    fn a_config_change_rolls_the_workers() {
        let lsub = lsub();
        let hash = |w: &Workload| {
            w.deployment
                .spec
                .template
                .metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()[CONFIG_HASH]
                .clone()
        };
        let before = built(&lsub);
        assert_eq!(hash(&before), hash(&built(&lsub)), "stable");
        let mut changed = lsub.clone();
        changed.spec.workers.batch.max_events = 42;
        assert_ne!(hash(&before), hash(&built(&changed)));
        assert_eq!(hash(&before).len(), 64);
        // So does a change of how the controller runs them: their admin
        // address is in their arguments, not their configuration.
        let config = worker_config(&lsub, "arn:aws:kinesis:us-east-1:1:stream/flow").unwrap();
        let moved = Runtime {
            admin_addr: "0.0.0.0:9090".parse().unwrap(),
            ..runtime()
        };
        let elsewhere = workload(&lsub, &moved, &config).unwrap();
        assert_ne!(hash(&before), hash(&elsewhere));
    }

    #[test]
    fn a_subscription_not_read_from_the_api_server_is_refused() {
        let mut lsub = lsub();
        lsub.metadata.uid = None;
        let config = worker_config(&lsub, "arn:x").unwrap();
        assert_eq!(
            workload(&lsub, &runtime(), &config),
            Err(BuildError::Missing("uid"))
        );
    }
}
