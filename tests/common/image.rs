//! The container image `make image` writes, from the tests' side: built,
//! unpacked with every blob checked against its digest, and offered to the
//! stack's local node.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{repo, stack};

pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs `hack/image.sh` into `out`; returns the manifest digest it printed.
pub fn build(out: &Path) -> String {
    build_and_push(out, None)
}

/// [`build`], also pushing the image to `push` (registry/repository:tag).
pub fn build_and_push(out: &Path, push: Option<&str>) -> String {
    let mut command = Command::new(repo().join("hack/image.sh"));
    command.env("LOGSUB_IMAGE", out);
    if let Some(reference) = push {
        command.env("LOGSUB_IMAGE_PUSH", reference);
    }
    let run = command.output().expect("hack/image.sh");
    assert!(
        run.status.success(),
        "make image: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8(run.stdout).unwrap();
    let line = stdout.lines().last().expect("a line");
    let (path, digest) = line.split_once(' ').expect("path and digest");
    assert_eq!(Path::new(path), out);
    digest.to_owned()
}

pub fn untar(archive: &Path, into: &Path, gzip: bool) {
    std::fs::create_dir_all(into).unwrap();
    let flags = if gzip { "-xzf" } else { "-xf" };
    let status = Command::new("tar")
        .args([
            flags,
            archive.to_str().unwrap(),
            "-C",
            into.to_str().unwrap(),
        ])
        .status()
        .expect("tar");
    assert!(status.success(), "untar {}", archive.display());
}

/// A blob of an OCI layout, after checking it against its digest and size.
pub fn blob(layout: &Path, descriptor: &Value) -> Vec<u8> {
    let digest = descriptor["digest"].as_str().expect("digest");
    let hex = digest.strip_prefix("sha256:").expect("sha256");
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex)).expect("blob");
    assert_eq!(sha256(&bytes), hex, "blob {digest}");
    assert_eq!(descriptor["size"].as_u64(), Some(bytes.len() as u64));
    bytes
}

/// An OCI archive taken apart.
pub struct Unpacked {
    /// The layout's `index.json`.
    pub index: Value,
    pub manifest: Value,
    pub config: Value,
    /// The single layer's gzip tar, as stored.
    pub layer: Vec<u8>,
    /// The layer extracted.
    pub rootfs: PathBuf,
}

/// Unpacks `archive` (one image of one layer) under `dir`.
pub fn unpack(archive: &Path, dir: &Path) -> Unpacked {
    let layout = dir.join("layout");
    untar(archive, &layout, false);
    let json = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(layout.join(name)).expect(name)).expect(name)
    };
    assert_eq!(json("oci-layout")["imageLayoutVersion"], "1.0.0");
    let index = json("index.json");
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1, "one image in the archive");
    let manifest: Value = serde_json::from_slice(&blob(&layout, &manifests[0])).unwrap();
    let config: Value = serde_json::from_slice(&blob(&layout, &manifest["config"])).unwrap();
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "one layer");
    let layer = blob(&layout, &layers[0]);
    let rootfs = dir.join("rootfs");
    let compressed = dir.join("layer.tar.gz");
    std::fs::write(&compressed, &layer).unwrap();
    untar(&compressed, &rootfs, true);
    Unpacked {
        index,
        manifest,
        config,
        layer,
        rootfs,
    }
}

/// The image, built and unpacked under the tests' temporary directory, with
/// its binary mapped on the local node as `repository` (any tag or digest):
/// pods of that image run the image's own `/logsub`. Returns the digest.
pub fn on_the_node(repository: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("node-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let archive = dir.join("logsub.oci.tar");
    let digest = build(&archive);
    let unpacked = unpack(&archive, &dir);
    // The node's image map is re-read at each pod start; replace it atomically.
    let map = PathBuf::from(stack().var("LOGSUB_STACK_IMAGES"));
    let mut images: Value =
        serde_json::from_slice(&std::fs::read(&map).expect("image map")).unwrap();
    images["images"][repository] =
        Value::from(unpacked.rootfs.join("logsub").display().to_string());
    let tmp = map.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&tmp, images.to_string()).unwrap();
    std::fs::rename(&tmp, &map).unwrap();
    digest
}
