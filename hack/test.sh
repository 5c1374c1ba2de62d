#!/usr/bin/env bash
# `make test`: installs what is missing, runs the static checks and unit tests,
# starts the local stack (fresh) unless it already runs, runs every test against
# it, and stops what it started, also on failure.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$HACK_DIR/lib/build.sh"
source "$HACK_DIR/lib/run.sh"
cd "$REPO_DIR"

step() { printf '\n==> %s\n' "$*" >&2; }

step "installing what is missing"
install_all

step "static checks"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
test -z "$(gofmt -l hack/localnode hack/health hack/image)" || { gofmt -l hack/localnode hack/health hack/image; die "gofmt: Go sources need formatting"; }
(cd hack/localnode && GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=mod go vet ./...)
(cd hack/health && GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=mod go vet ./...)
(cd hack/image && GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=mod go vet ./...)

step "unit tests"
cargo build --locked --bins
cargo test --locked --lib --test api --test hostile
(cd hack/localnode && GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=mod go test ./...)
# Argo CD's health Lua (run by gopher-lua) and Flux's kstatus on the status shapes.
(cd hack/health && GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=mod go test ./...)
(cd hack/moto && "$VENV/bin/python" -m pytest -q -p no:cacheprovider test_filter_pattern.py)

step "install steps run at once against an empty cache (locks)"
cargo test --locked --test install

step "container image (make image: static binary, OCI archive, run in a chroot)"
cargo test --locked --test image

step "fuzzing decode + transforms for ${LOGSUB_FUZZ_SECONDS:=60} s"
LOGSUB_FUZZ_SECONDS="$LOGSUB_FUZZ_SECONDS" cargo test --locked --test fuzz -- --nocapture

started=false
if ! stack_status >/dev/null 2>&1; then
  step "starting a fresh local stack"
  stack_down >/dev/null 2>&1 || true
  rm -rf "$DATA_DIR" "$LOGSUB_STATE/node"
  started=true
  trap 'step "stopping the local stack"; stack_down; verify_down' EXIT
fi
export LOGSUB_BIN="${CARGO_TARGET_DIR:-$REPO_DIR/target}/debug/logsub"
stack_up
eval "$(stack_env)"

step "moto corrections (each against corrected and stock moto)"
(cd hack/moto && "$VENV/bin/python" -m pytest -q -p no:cacheprovider test_corrections.py)

step "integration tests"
# Each fault trial adds its line here; they are printed together at the end.
export LOGSUB_TRIALS_FILE="$LOG_DIR/trials.txt"
rm -f "$LOGSUB_TRIALS_FILE"
cargo test --locked --test cluster --test localnode --test tenancy --test leases --test kinesis --test worker --test aws --test search --test elasticsearch --test secured --test faults --test s3 --test conformance --test dashboards --test trials --test controller --test recovery --test replicas --test helm --test restart

step "fault trials (sent, delivered, unique, duplicates, dead-lettered, lost, recovery)"
cat "$LOGSUB_TRIALS_FILE" >&2 || true

if $started; then say "all tests passed; the stack will now stop"; else say "all tests passed; the stack keeps running"; fi
