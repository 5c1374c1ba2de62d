//! The container image `make image` writes: an OCI archive whose blobs match
//! their digests, whose config runs `/logsub` as the non-root user with the OCI
//! labels, that agrees with the Dockerfile, that is reproducible, and whose
//! root filesystem runs the binary in a chroot with nothing from the host.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::image::{build, build_and_push, sha256, unpack};
use common::{repo, stack_sh};

/// A program on the host's PATH, for a child whose environment is cleared.
fn host_program(name: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} on PATH"))
}

fn files_under(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out
}

/// The final stage's instructions of the Dockerfile, continuation lines joined.
fn dockerfile_final_stage() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let joined = text.replace("\\\n", " ");
    let lines: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let start = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("FROM");
    assert_eq!(lines[start], "FROM scratch", "the runtime stage is empty");
    lines[start..].iter().map(|l| l.to_string()).collect()
}

#[test]
fn the_image_runs_alone_as_the_dockerfile_says() {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let archive = dir.join("logsub.oci.tar");
    let digest = build(&archive);
    assert_eq!(
        build(&archive),
        digest,
        "the same commit and binary give the same image"
    );

    let image = unpack(&archive, &dir);
    let manifests = image.index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests[0]["digest"], digest.as_str());
    assert_eq!(
        manifests[0]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifests[0]["annotations"]["org.opencontainers.image.ref.name"],
        env!("CARGO_PKG_VERSION")
    );
    let (manifest, config) = (&image.manifest, &image.config);
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    let run = &config["config"];
    assert_eq!(run["Entrypoint"], serde_json::json!(["/logsub"]));
    assert_eq!(run["User"], "65532:65532");
    let labels = &run["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "logsub");
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        labels["org.opencontainers.image.licenses"],
        env!("CARGO_PKG_LICENSE")
    );
    assert_eq!(
        labels["org.opencontainers.image.description"],
        env!("CARGO_PKG_DESCRIPTION")
    );
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(
        labels["org.opencontainers.image.revision"],
        String::from_utf8_lossy(&head.stdout).trim()
    );

    // The Dockerfile's final stage says the same.
    let stage = dockerfile_final_stage();
    assert!(stage.contains(&"USER 65532:65532".to_owned()), "{stage:?}");
    assert!(
        stage.contains(&r#"ENTRYPOINT ["/logsub"]"#.to_owned()),
        "{stage:?}"
    );
    for env in run["Env"].as_array().unwrap() {
        let env = env.as_str().unwrap();
        assert!(
            stage.contains(&format!("ENV {env}")),
            "Dockerfile ENV {env}"
        );
    }
    let label_line = stage.iter().find(|l| l.starts_with("LABEL ")).unwrap();
    for key in ["title", "description", "licenses"] {
        let key = format!("org.opencontainers.image.{key}");
        let value = labels[&key].as_str().unwrap();
        assert!(
            label_line.contains(&format!("{key}=\"{value}\"")),
            "Dockerfile LABEL {key}={value}"
        );
    }

    // One layer, its diff id the digest of its uncompressed tar.
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let mut tar = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&image.layer[..]),
        &mut tar,
    )
    .unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        format!("sha256:{}", sha256(&tar)).as_str()
    );
    let rootfs = &image.rootfs;
    assert_eq!(
        files_under(rootfs),
        [
            "etc/group",
            "etc/passwd",
            "etc/ssl/certs/ca-certificates.crt",
            "logsub"
        ]
        .map(String::from)
        .into(),
        "the root filesystem holds the binary and what it reads, nothing else"
    );
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.contains(":65532:65532:"), "{passwd}");

    // In a chroot of that filesystem, as the image's user: no loader, no libc,
    // no shell from the host; a dynamically linked binary would not start.
    let crd = Command::new(host_program("chroot"))
        .args([
            "--userspec=65532:65532",
            rootfs.to_str().unwrap(),
            "/logsub",
            "crd",
        ])
        .env_clear()
        .output()
        .expect("chroot");
    assert!(
        crd.status.success(),
        "logsub crd in the image: {}",
        String::from_utf8_lossy(&crd.stderr)
    );
    assert_eq!(
        String::from_utf8(crd.stdout).unwrap(),
        logsub::api::crd_files()
            .into_iter()
            .map(|(file, _)| std::fs::read_to_string(repo().join("crds").join(file)).unwrap())
            .collect::<String>(),
        "the image's binary prints the committed CRDs"
    );
    let help = Command::new(host_program("chroot"))
        .args([
            "--userspec=65532:65532",
            rootfs.to_str().unwrap(),
            "/logsub",
            "controller",
            "--help",
        ])
        .env_clear()
        .output()
        .expect("chroot");
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("--worker-image"),
        "{}",
        String::from_utf8_lossy(&help.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `LOGSUB_IMAGE_PUSH` pushes through the registry API to the reference
/// registry (CNCF distribution), and the image comes back whole: under its tag
/// the manifest of the archive's digest, and every blob with its own digest.
#[tokio::test]
async fn the_image_is_pushed_to_a_registry() {
    let registry = stack_sh(&["env"])
        .lines()
        .find_map(|l| l.strip_prefix("export LOGSUB_REGISTRY="))
        .expect("the registry's address")
        .to_owned();
    stack_sh(&["registry", "start"]);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("image-push-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let archive = dir.join("logsub.oci.tar");
    let tag = env!("CARGO_PKG_VERSION");
    let digest = build_and_push(&archive, Some(&format!("{registry}/logsub:{tag}")));
    let image = unpack(&archive, &dir);

    let http = reqwest::Client::new();
    let manifest = http
        .get(format!("http://{registry}/v2/logsub/manifests/{tag}"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .expect("GET manifest");
    assert!(manifest.status().is_success(), "{}", manifest.status());
    assert_eq!(
        manifest.headers()["docker-content-digest"]
            .to_str()
            .unwrap(),
        digest,
        "the tag names the archive's image"
    );
    let body = manifest.bytes().await.unwrap();
    assert_eq!(format!("sha256:{}", sha256(&body)), digest);
    let pushed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(pushed, image.manifest);
    let blobs = std::iter::once(&pushed["config"]).chain(pushed["layers"].as_array().unwrap());
    for blob in blobs {
        let want = blob["digest"].as_str().unwrap();
        let got = http
            .get(format!("http://{registry}/v2/logsub/blobs/{want}"))
            .send()
            .await
            .expect("GET blob")
            .bytes()
            .await
            .unwrap();
        assert_eq!(format!("sha256:{}", sha256(&got)), want, "blob {want}");
    }
    stack_sh(&["registry", "stop"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
