//! The API as files: the committed CRD and the examples. No servers needed.

use std::path::Path;
use std::process::Command;

use logsub::api::{LogSubscription, crd_yaml};

const CRD_FILE: &str = "crds/logsubscription.yaml";

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

#[test]
fn committed_crd_is_current() {
    assert!(
        repo_file(CRD_FILE) == crd_yaml(),
        "{CRD_FILE} is out of date with the Rust types; regenerate it with:\n    cargo run -- crd > {CRD_FILE}"
    );
}

#[test]
fn crd_command_prints_the_committed_crd() {
    let out = Command::new(env!("CARGO_BIN_EXE_logsub"))
        .arg("crd")
        .output()
        .expect("run logsub crd");
    assert!(
        out.status.success(),
        "logsub crd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == repo_file(CRD_FILE).into_bytes(),
        "`logsub crd` differs from {CRD_FILE}; regenerate it with:\n    cargo run -- crd > {CRD_FILE}"
    );
}

pub fn examples() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).expect("read example"),
            )
        })
        .collect()
}

#[test]
fn examples_deserialize_and_validate() {
    let examples = examples();
    assert!(
        examples.len() >= 3,
        "want at least three examples, found {}",
        examples.len()
    );
    for (path, text) in examples {
        let lsub: LogSubscription = serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("{path} does not deserialize: {e}"));
        assert!(
            lsub.metadata.name.is_some() && lsub.metadata.namespace.is_some(),
            "{path}: name and namespace"
        );
        if let Err(e) = lsub.spec.validate() {
            panic!("{path} does not validate: {e}");
        }
    }
}

#[test]
fn examples_cover_the_named_scenarios() {
    let all: Vec<LogSubscription> = examples()
        .iter()
        .map(|(_, t)| serde_saphyr::from_str(t).expect("example"))
        .collect();
    use logsub::api::{Compression, ElasticsearchTarget, Sink, Transform};
    let daily_vpc = all.iter().any(|l| {
        l.spec.transforms.iter().any(|t| matches!(t, Transform::VpcFlowLog(_)))
            && matches!(&l.spec.sink, Sink::Elasticsearch(es) if matches!(es.target(), Some(ElasticsearchTarget::Index(i)) if i.contains("%d")))
    });
    let lambda_ds = all.iter().any(|l| {
        l.spec.source.log_groups.prefix.as_deref() == Some("/aws/lambda/")
            && matches!(&l.spec.sink, Sink::Elasticsearch(es) if matches!(es.target(), Some(ElasticsearchTarget::DataStream(_))))
    });
    let trail_s3 = all.iter().any(|l| {
        l.spec.transforms.iter().any(|t| matches!(t, Transform::CloudTrail(_)))
            && matches!(&l.spec.sink, Sink::S3(s3) if s3.compression == Compression::Gzip && s3.prefix.contains("year=%Y"))
    });
    assert!(daily_vpc, "an example sends VPC Flow Logs to a daily index");
    assert!(
        lambda_ds,
        "an example sends Lambda logs by prefix to a data stream"
    );
    assert!(
        trail_s3,
        "an example archives CloudTrail to S3, gzip, Hive-style"
    );
}
