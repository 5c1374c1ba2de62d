//! The worker configuration a LogSubscription renders to, from the same types
//! the worker reads. Secrets stay Secrets: the configuration names the files
//! where the worker Pod mounts them.

use super::workload::BuildError;
use crate::api::{ElasticsearchAuth, LogSubscription, SecretKeyRef, Sink};
use crate::contract::config::{
    AssumeRole, ElasticsearchCredentials, ElasticsearchOutput, IndexTemplateOutput, LeaseSettings,
    OutputSink, S3Output, SinkConfigError, StartAt, SubscriptionRef, WorkerConfig,
};

/// Where the worker Pod mounts each Secret the sink names: `<SECRETS_DIR>/<name>/`.
pub const SECRETS_DIR: &str = "/etc/logsub/secrets";

/// The directory of a mounted Secret.
pub fn secret_dir(name: &str) -> String {
    format!("{SECRETS_DIR}/{name}")
}

fn secret_file(secret: &SecretKeyRef, default_key: &str) -> String {
    format!(
        "{}/{}",
        secret_dir(&secret.name),
        secret.key_or(default_key)
    )
}

/// The Secrets the sink names, which the worker Pod mounts.
pub fn secrets(lsub: &LogSubscription) -> Vec<String> {
    let mut names = Vec::new();
    if let Sink::Elasticsearch(es) = &lsub.spec.sink {
        match &es.auth {
            Some(ElasticsearchAuth::Basic(basic)) => names.push(basic.secret_ref.name.clone()),
            Some(ElasticsearchAuth::ApiKey(key)) => names.push(key.secret_ref.name.clone()),
            _ => {}
        }
        if let Some(ca) = es.tls.as_ref().and_then(|t| t.ca_secret_ref.as_ref()) {
            names.push(ca.name.clone());
        }
    }
    names.sort();
    names.dedup();
    names
}

/// The worker configuration of `lsub`, reading `stream_arn`. Fails only
/// for a sink that validation refuses.
pub fn worker_config(lsub: &LogSubscription, stream_arn: &str) -> Result<WorkerConfig, BuildError> {
    let spec = &lsub.spec;
    Ok(WorkerConfig {
        subscription: SubscriptionRef {
            namespace: lsub.metadata.namespace.clone().unwrap_or_default(),
            name: lsub.metadata.name.clone().unwrap_or_default(),
        },
        region: spec.region.clone(),
        assume_role: spec.aws.as_ref().map(|identity| AssumeRole {
            role_arn: identity.role_arn.clone(),
            external_id: identity.external_id.clone(),
            session_name: crate::controller::session_name(lsub, "@worker"),
        }),
        stream_arn: stream_arn.to_owned(),
        stream_created: None,
        start_position: StartAt::TrimHorizon,
        transforms: spec.transforms.clone(),
        sink: sink(lsub).map_err(BuildError::Sink)?,
        batch: spec.workers.batch.clone(),
        leases: LeaseSettings::default(),
        max_inflated_bytes: WorkerConfig::default_max_inflated(),
        processing_budget: WorkerConfig::default_processing_budget(),
    })
}

fn sink(lsub: &LogSubscription) -> Result<OutputSink, SinkConfigError> {
    Ok(match &lsub.spec.sink {
        Sink::Elasticsearch(es) => OutputSink::Elasticsearch(ElasticsearchOutput {
            dead_letter_index: es
                .dead_letter
                .as_ref()
                .map(|d| ElasticsearchOutput::parse_dead_letter_index(&d.index))
                .transpose()?,
            auth: es.auth.as_ref().map(|auth| match auth {
                ElasticsearchAuth::Basic(basic) => ElasticsearchCredentials::Basic {
                    secret_dir: secret_dir(&basic.secret_ref.name),
                },
                ElasticsearchAuth::ApiKey(key) => ElasticsearchCredentials::ApiKey {
                    file: secret_file(&key.secret_ref, "apiKey"),
                },
                ElasticsearchAuth::AwsSigV4(sigv4) => ElasticsearchCredentials::AwsSigV4 {
                    region: sigv4.region.clone().or_else(|| lsub.spec.region.clone()),
                    service: sigv4.service,
                },
            }),
            ca_file: es
                .tls
                .as_ref()
                .and_then(|t| t.ca_secret_ref.as_ref())
                .map(|ca| secret_file(ca, "ca.crt")),
            index_template: es.index_template.as_ref().map(|t| IndexTemplateOutput {
                name: lsub.resource_name(),
                replaces: Some(lsub.legacy_name()),
                shards: t.shards,
                replicas: t.replicas,
                overwrite: t.overwrite,
            }),
            ..ElasticsearchOutput::new(&es.endpoint, es.target()?)?
        }),
        Sink::S3(s3) => OutputSink::S3(S3Output {
            bucket: s3.bucket.clone(),
            prefix: s3.prefix_template()?,
            compression: s3.compression,
            region: s3.region.clone().or_else(|| lsub.spec.region.clone()),
            endpoint: s3.endpoint.clone(),
            force_path_style: s3.force_path_style,
            kms_key_id: s3.kms_key_id.clone(),
            // The API spells storage classes as S3 does.
            storage_class: s3
                .storage_class
                .and_then(|c| serde_json::to_value(c).ok())
                .and_then(|v| v.as_str().map(str::to_owned)),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SigV4Service;

    fn lsub(yaml: &str) -> LogSubscription {
        let mut lsub: LogSubscription = serde_saphyr::from_str(yaml).unwrap();
        lsub.metadata.namespace = Some("observability".into());
        lsub
    }

    const ES: &str = r#"
apiVersion: logsub.io/v1alpha1
kind: LogSubscription
metadata: {name: vpc-flow}
spec:
  region: eu-west-1
  source: {logGroups: {names: [/aws/vpc/flow]}, roleArn: "arn:aws:iam::123456789012:role/CWLtoKinesis"}
  stream: {existing: {name: flow}}
  transforms: [{vpcFlowLog: {}}]
  sink:
    elasticsearch:
      endpoint: https://search:9200
      index: cwl-%Y.%m.%d
      auth: {basic: {secretRef: {name: es-creds}}}
      tls: {caSecretRef: {name: es-ca}}
      deadLetter: {index: cwl-dead}
      indexTemplate: {shards: 2, replicas: 1}
  workers: {replicas: 2, batch: {maxEvents: 1000}}
"#;

    #[test]
    fn an_elasticsearch_subscription_renders_its_worker_config() {
        let lsub = lsub(ES);
        let config = worker_config(&lsub, "arn:aws:kinesis:eu-west-1:1:stream/flow").unwrap();
        assert_eq!(config.subscription.namespace, "observability");
        assert_eq!(config.subscription.name, "vpc-flow");
        assert_eq!(config.region.as_deref(), Some("eu-west-1"));
        assert_eq!(config.batch.max_events, 1000);
        assert_eq!(config.transforms, lsub.spec.transforms);
        let OutputSink::Elasticsearch(es) = &config.sink else {
            panic!("elasticsearch");
        };
        assert_eq!(
            es.auth,
            Some(ElasticsearchCredentials::Basic {
                secret_dir: "/etc/logsub/secrets/es-creds".into()
            })
        );
        assert_eq!(
            es.ca_file.as_deref(),
            Some("/etc/logsub/secrets/es-ca/ca.crt")
        );
        assert_eq!(
            es.dead_letter_index.as_ref().map(|t| t.source()),
            Some("cwl-dead")
        );
        assert_eq!(
            es.index_template
                .as_ref()
                .map(|t| (t.name.as_str(), t.replaces.as_deref(), t.shards)),
            Some((
                "logsub_observability_vpc-flow",
                Some("logsub-observability-vpc-flow"),
                2
            ))
        );
        config.check().unwrap();
        // The worker reads back exactly what the controller writes.
        let back: WorkerConfig = serde_saphyr::from_str(&config.to_yaml()).unwrap();
        assert_eq!(back, config);
        assert_eq!(secrets(&lsub), ["es-ca", "es-creds"]);
    }

    /// A sink that validation refuses (admission would too) renders no
    /// configuration, and says which field.
    #[test]
    fn a_sink_without_one_target_renders_nothing() {
        let both = lsub(&ES.replace(
            "index: cwl-%Y.%m.%d",
            "index: cwl-%Y.%m.%d\n      dataStream: logs-x-y",
        ));
        let err = worker_config(&both, "arn:x").unwrap_err().to_string();
        assert_eq!(
            err,
            "spec.sink.elasticsearch: exactly one of index or dataStream must be set"
        );
    }

    #[test]
    fn s3_and_sigv4_subscriptions_render_too() {
        let s3 = lsub(
            r#"
apiVersion: logsub.io/v1alpha1
kind: LogSubscription
metadata: {name: trail}
spec:
  source: {logGroups: {prefix: /aws/cloudtrail}, roleArn: "arn:aws:iam::123456789012:role/r"}
  stream: {managed: {shardCount: 1}}
  sink: {s3: {bucket: trail-archive, storageClass: STANDARD_IA, compression: zstd}}
"#,
        );
        let OutputSink::S3(out) = worker_config(&s3, "arn:aws:kinesis:us-east-1:1:stream/t")
            .unwrap()
            .sink
        else {
            panic!("s3");
        };
        assert_eq!(out.storage_class.as_deref(), Some("STANDARD_IA"));
        assert_eq!(out.prefix.source(), "{logGroup}/%Y/%m/%d/%H/");
        assert!(secrets(&s3).is_empty());

        let signed = lsub(&ES.replace(
            "auth: {basic: {secretRef: {name: es-creds}}}",
            "auth: {awsSigV4: {service: aoss}}",
        ));
        let OutputSink::Elasticsearch(es) = worker_config(&signed, "arn:x").unwrap().sink else {
            panic!("elasticsearch");
        };
        assert_eq!(
            es.auth,
            Some(ElasticsearchCredentials::AwsSigV4 {
                region: Some("eu-west-1".into()),
                service: SigV4Service::Aoss
            })
        );
        assert_eq!(secrets(&signed), ["es-ca"]);
    }
}
