#!/usr/bin/env bash
# `make image`: builds logsub's container image as an OCI archive without a
# container engine: a static (musl) release binary, then hack/image writes the
# image with go-containerregistry. Prints the archive's path and digest.
#
#   LOGSUB_IMAGE       where to write the archive (default: under the cargo target dir)
#   LOGSUB_IMAGE_PUSH  also push it there (registry/repository:tag), with the
#                      credentials `docker login` (or `crane auth login`) stored
#
# Load or push it with any OCI tool, e.g. `podman load -i <archive>` or
# `skopeo copy oci-archive:<archive> docker://<your registry>/logsub:<version>`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$HACK_DIR/lib/build.sh"
cd "$REPO_DIR"

need go python3 cargo rustup git flock
install_image_tools

target=x86_64-unknown-linux-musl
target_dir="${CARGO_TARGET_DIR:-$REPO_DIR/target}"
out="${LOGSUB_IMAGE:-$target_dir/image/logsub.oci.tar}"
mkdir -p "$(dirname "$out")"

say "building the static logsub binary ($target)"
# One build at a time (tests build the image at once): the clone check must not
# drop fingerprints under a build that is running.
static_build() {
  own_target_dir "$target/release"
  PATH="$ZIG_VENV/bin:$PATH" cargo zigbuild --quiet --release --locked --target "$target" --bin logsub
}
with_lock static-build static_build

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
revision="$(git rev-parse HEAD 2>/dev/null || true)"
# Reproducible: the same commit and binary give the same image digest.
SOURCE_DATE_EPOCH="$(git log -1 --format=%ct 2>/dev/null || echo 0)" \
  go_env go run -C "$HACK_DIR/image" . \
  -binary "$target_dir/$target/release/logsub" \
  -rootfs "$HACK_DIR/image/rootfs" \
  -version "$version" -revision "$revision" \
  -out "$(realpath "$out")" ${LOGSUB_IMAGE_PUSH:+-push "$LOGSUB_IMAGE_PUSH"}
