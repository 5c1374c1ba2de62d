#!/usr/bin/env bash
# `make test`: installs what is missing, runs the static checks and unit tests,
# starts the local stack (fresh) unless it already runs, runs every test against
# it, and stops what it started, also on failure.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$HACK_DIR/lib/build.sh"
source "$HACK_DIR/lib/run.sh"
cd "$REPO_DIR"
own_target_dir debug

step() { printf '\n==> %s (at %d s)\n' "$*" "$SECONDS" >&2; }

# Test executables run this many at a time; one that hangs fails on its own
# after this many seconds rather than holding the run.
LANES="${LOGSUB_TEST_LANES:-4}"
LANE_TIMEOUT="${LOGSUB_TEST_TIMEOUT:-1200}"
[[ "$LANES" =~ ^[1-9][0-9]*$ ]] || die "LOGSUB_TEST_LANES must be a number of lanes, 1 or more (it is '$LANES')"
[[ "$LANE_TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "LOGSUB_TEST_TIMEOUT must be a number of seconds (it is '$LANE_TIMEOUT')"

step "installing what is missing"
install_all

step "static checks"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
test -z "$(gofmt -l hack/localnode hack/health hack/image)" || { gofmt -l hack/localnode hack/health hack/image; die "gofmt: Go sources need formatting"; }
(cd hack/localnode && GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=mod go vet ./...)
(cd hack/health && GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=mod go vet ./...)
(cd hack/image && GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=mod go vet ./...)

step "building"
# Every test executable (and logsub's binary, which the tests and the stack's
# Pods run), built at once; by name: `lib` and each tests/<name>.rs.
declare -A EXE=()
mkdir -p "$LOG_DIR"
# To a file first: a failed build must stop the run (a process substitution's
# status would be lost).
cargo test --locked --no-run --message-format=json-render-diagnostics >"$LOG_DIR/test-build.json"
while read -r name exe; do EXE[$name]=$exe; done < <(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        kind = m["target"]["kind"]
        if "lib" in kind or "test" in kind:
            print("lib" if "lib" in kind else m["target"]["name"], m["executable"])
' "$LOG_DIR/test-build.json")
for file in tests/*.rs; do
  name=$(basename "$file" .rs)
  [ -n "${EXE[$name]:-}" ] || die "the build gave no executable for $file"
done
[ -n "${EXE[lib]:-}" ] || die "the build gave no unit-test executable"
mkdir -p "$LOG_DIR/tests"

# The test executables run side by side ("lanes"): most of their time is spent
# waiting on servers, leases and timeouts, not on the CPU. Each one's output is
# printed whole when it ends.
declare -A LANE_NAME=() LANE_START=()
# An entry is a test executable, or a part of one (LANE_EXE) that takes long
# enough to deserve a lane of its own; LANE_ARGS go to the executable.
declare -A LANE_EXE=([fault-nodes]=faults)
declare -A LANE_ARGS=([fuzz]=--nocapture [fault-nodes]=overload_outage [faults]="--skip overload_outage")
LANE_FAILED=() LANE_TIMES=()

# lane_start ENTRY [PREFIX…]: runs ENTRY's executable in the background, in a
# process group of its own (so that an early exit can stop it whole).
lane_start() {
  local name=$1 && shift
  # shellcheck disable=SC2086 # LANE_ARGS holds words
  (cd "$REPO_DIR" && exec setsid "$@" timeout -k 30 "$LANE_TIMEOUT" "${EXE[${LANE_EXE[$name]:-$name}]}" ${LANE_ARGS[$name]:-}) >"$LOG_DIR/tests/$name.log" 2>&1 &
  LANE_NAME[$!]=$name LANE_START[$!]=$SECONDS
}

# Waits for one running executable to end and prints its output.
lane_wait() {
  local pid status=0
  # Only for the lanes: the stack's servers are this shell's children too.
  wait -n -p pid "${!LANE_NAME[@]}" || status=$?
  local name=${LANE_NAME[$pid]} took=$((SECONDS - ${LANE_START[$pid]}))
  unset "LANE_NAME[$pid]"
  local result=passed
  if ((took >= LANE_TIMEOUT)); then result="FAILED (stopped after $LANE_TIMEOUT s)"
  elif ((status > 128)); then result="FAILED (killed by signal $((status - 128)))"
  elif ((status != 0)); then result="FAILED (exit status $status)"
  fi
  printf '\n--- %s (tests/%s.rs%s): %s in %s s\n' "$name" "${LANE_EXE[$name]:-$name}" "${LANE_ARGS[$name]:+ ${LANE_ARGS[$name]}}" "$result" "$took" >&2
  cat "$LOG_DIR/tests/$name.log" >&2
  LANE_TIMES+=("$(printf '%5d s  %s' "$took" "$name")")
  ((status == 0)) || LANE_FAILED+=("$name")
}

# lane_run LANES NAME…: runs each, at most LANES at once (counting any already running).
lane_run() {
  local lanes=$1 name && shift
  for name in "$@"; do
    while ((${#LANE_NAME[@]} >= lanes)); do lane_wait; done
    lane_start "$name"
  done
  while ((${#LANE_NAME[@]} > 0)); do lane_wait; done
}

started=false
if ! stack_status >/dev/null 2>&1; then
  step "a fresh local stack (it starts after the unit tests)"
  stack_down >/dev/null 2>&1 || true
  # A server the stack lost track of would otherwise fail a test much later.
  verify_down
  rm -rf "$DATA_DIR" "$LOGSUB_STATE/node"
  started=true
fi
cleanup() {
  local pid
  for pid in "${!LANE_NAME[@]}"; do kill -- "-$pid" 2>/dev/null || true; done
  if $started; then step "stopping the local stack"; stack_down; verify_down; fi
}
trap cleanup EXIT

# The static image's release build is the longest step and needs no stack: it
# starts now, beside the unit tests and the stack's start.
lane_start image

step "unit tests"
(cd "$REPO_DIR" && "${EXE[lib]}" && "${EXE[api]}" && "${EXE[hostile]}")
(cd hack/localnode && GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=mod go test ./...)
# Argo CD's health Lua (run by gopher-lua) and Flux's kstatus on the status shapes.
(cd hack/health && GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=mod go test ./...)
(cd hack/moto && "$VENV/bin/python" -m pytest -q -p no:cacheprovider test_filter_pattern.py)

step "starting the local stack"
export LOGSUB_BIN="${CARGO_TARGET_DIR:-$REPO_DIR/target}/debug/logsub"
stack_up
eval "$(stack_env)"

step "moto corrections (each against corrected and stock moto)"
(cd hack/moto && "$VENV/bin/python" -m pytest -q -p no:cacheprovider test_corrections.py)

step "integration tests, $LANES at a time"
# Each fault trial adds its line here; they are printed together at the end.
export LOGSUB_TRIALS_FILE="$LOG_DIR/trials.txt"
rm -f "$LOGSUB_TRIALS_FILE"
export LOGSUB_FUZZ_SECONDS="${LOGSUB_FUZZ_SECONDS:-60}"
# Longest first; the others follow in name order. `restart` runs alone at the
# end: restarting the API server disturbs every client. `image` is running.
first=(fault-nodes replicas secured controller faults trials fuzz helm recovery tenancy worker localnode)
rest=()
for name in $(printf '%s\n' "${!EXE[@]}" | sort); do
  case " lib api hostile image restart ${first[*]} " in *" $name "*) ;; *) rest+=("$name") ;; esac
done
lane_run "$LANES" "${first[@]}" "${rest[@]}"
lane_run 1 restart

step "fault trials (sent, delivered, unique, duplicates, dead-lettered, lost, recovery)"
cat "$LOGSUB_TRIALS_FILE" >&2 || true
step "test executables, by time (side by side, so these overlap)"
printf '%s\n' "${LANE_TIMES[@]}" | sort -rn >&2
((${#LANE_FAILED[@]} == 0)) || die "failed: ${LANE_FAILED[*]} (their output is above, and in $LOG_DIR/tests)"

if $started; then say "all tests passed; the stack will now stop"; else say "all tests passed; the stack keeps running"; fi
