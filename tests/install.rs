//! The stack's install steps are safe to run at once: tests and scripts may
//! start the same install in parallel on a fresh machine (`make image` from two
//! tests, say). Two runs of one step against an empty cache both succeed, and
//! the step runs once: the second waits for the first and finds it done.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

fn install(step: &str, cache: &Path) -> std::process::Child {
    Command::new(common::repo().join("hack/stack.sh"))
        .args(["install", step])
        .env("LOGSUB_CACHE", cache.join("cache"))
        .env("LOGSUB_STATE", cache.join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hack/stack.sh install")
}

#[test]
fn two_installs_of_one_step_at_once_both_succeed_and_install_once() {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let runs = [install("seaweedfs", &dir), install("seaweedfs", &dir)];
    let mut installed = 0;
    for run in runs {
        let out = run.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "an install failed:\n{stderr}");
        installed += stderr.matches("installing SeaweedFS").count();
    }
    assert_eq!(installed, 1, "one run installed, the other found it done");
    let weed = dir.join("cache").read_dir().unwrap().find_map(|e| {
        let path = e.ok()?.path().join("bin/weed");
        path.exists().then_some(path)
    });
    let version = Command::new(weed.expect("weed installed"))
        .arg("version")
        .output()
        .unwrap();
    assert!(version.status.success(), "the installed weed runs");
    std::fs::remove_dir_all(&dir).unwrap();
}
