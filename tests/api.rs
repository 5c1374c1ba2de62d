//! The API as files: the committed CRD and the examples. No servers needed.

use std::path::Path;
use std::process::Command;

use logsub::api::{LogSubscription, crd_files};

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

#[test]
fn committed_crds_are_current() {
    for (file, yaml) in crd_files() {
        assert!(
            repo_file(&format!("crds/{file}")) == yaml,
            "crds/{file} is out of date with the Rust types; regenerate it with `make crd`"
        );
    }
}

#[test]
fn crd_command_prints_the_committed_crds() {
    let out = Command::new(env!("CARGO_BIN_EXE_logsub"))
        .arg("crd")
        .output()
        .expect("run logsub crd");
    assert!(
        out.status.success(),
        "logsub crd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed: String = crd_files()
        .into_iter()
        .map(|(file, _)| repo_file(&format!("crds/{file}")))
        .collect();
    assert!(
        out.stdout == committed.into_bytes(),
        "`logsub crd` differs from crds/; regenerate it with `make crd`"
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
    use logsub::api::{Compression, Sink, Transform};
    use logsub::contract::config::Target;
    let daily_vpc = all.iter().any(|l| {
        l.spec.transforms.iter().any(|t| matches!(t, Transform::VpcFlowLog(_)))
            && matches!(&l.spec.sink, Sink::Elasticsearch(es) if matches!(es.target(), Ok(Target::Index(i)) if i.source().contains("%d")))
    });
    let lambda_ds = all.iter().any(|l| {
        l.spec.source.log_groups.prefix.as_deref() == Some("/aws/lambda/")
            && matches!(&l.spec.sink, Sink::Elasticsearch(es) if matches!(es.target(), Ok(Target::DataStream(_))))
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

/// Every example policy reads, and parses into rules that allow something:
/// a regex that does not compile would make it allow nothing.
#[test]
fn example_policies_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/policies/") {
        let path = entry.expect("dir entry").path();
        let text = std::fs::read_to_string(&path).expect("read example");
        let policy: logsub::api::LogSubscriptionPolicy = serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("{} does not deserialize: {e}", path.display()));
        let parsed = logsub::controller::authorize::Policy::new(&policy);
        assert!(
            parsed.broken().is_none(),
            "{}: {:?}",
            path.display(),
            parsed.broken()
        );
        seen += 1;
    }
    assert!(seen >= 1, "an example policy");
}
