#!/usr/bin/env bash
# `make trials`: the replica trials in full (tests/replicas.rs) against the local
# stack: LOGSUB_REPLICA_TRIALS kill -9 trials (20) of LOGSUB_REPLICA_EVENTS events
# (100,000) each, then scaling 1 → 3 → 1 and a rolling update under the same load.
# Arguments go to the test binary (e.g. `hack/trials.sh workers_killed` for the
# kill trials alone). Uses the running stack, or starts a fresh one and stops it at the end.
# Prints one line per trial and a summary (min/median/max takeover, totals).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$HACK_DIR/lib/build.sh"
source "$HACK_DIR/lib/run.sh"
cd "$REPO_DIR"
own_target_dir debug

step() { printf '\n==> %s\n' "$*" >&2; }

if stack_status >/dev/null 2>&1; then
  say "using the running stack"
else
  step "starting a fresh local stack"
  stack_down >/dev/null 2>&1 || true
  rm -rf "$DATA_DIR" "$LOGSUB_STATE/node"
  trap 'step "stopping the local stack"; stack_down; verify_down' EXIT
  export LOGSUB_BIN="${CARGO_TARGET_DIR:-$REPO_DIR/target}/debug/logsub"
  stack_up
fi
eval "$(stack_env)"

step "building"
# The worker Pods run this binary.
cargo build --locked --bins

export LOGSUB_REPLICA_TRIALS="${LOGSUB_REPLICA_TRIALS:-20}"
export LOGSUB_REPLICA_EVENTS="${LOGSUB_REPLICA_EVENTS:-100000}"
export LOGSUB_REPLICA_RATE="${LOGSUB_REPLICA_RATE:-5000}"
export LOGSUB_TRIALS_FILE="$LOG_DIR/replica-trials.txt"
rm -f "$LOGSUB_TRIALS_FILE"
step "replica trials: $LOGSUB_REPLICA_TRIALS kills, $LOGSUB_REPLICA_EVENTS events each at $LOGSUB_REPLICA_RATE/s"
start=$SECONDS
status=0
cargo test --locked --test replicas -- --nocapture "$@" || status=$?

step "replica trials (sent, delivered, unique, duplicates, answered 409, dead-lettered, lost, takeover) in $((SECONDS - start)) s"
cat "$LOGSUB_TRIALS_FILE" >&2 || true
exit "$status"
