#!/usr/bin/env bash
# The local stack: real Kubernetes with a local node that runs Pods as processes,
# OpenSearch, Elasticsearch, SeaweedFS (S3), moto (CloudWatch Logs + Kinesis) and
# Toxiproxy (the fault trials' proxy), all on 127.0.0.1. Versions: hack/versions.env.
#
#   hack/stack.sh up        install what is missing, start everything, wait for health
#   hack/stack.sh down      stop everything (data is kept; `down --purge` wipes it)
#   hack/stack.sh status    which servers run
#   hack/stack.sh env       export lines for KUBECONFIG, endpoints and test credentials
#   hack/stack.sh install [STEP]  only install and build (one step: moto, seaweedfs, etcd,
#                           kubernetes, helm, registry, toxiproxy, localnode, search-nodes,
#                           image-tools)
#   hack/stack.sh fault-node start|stop [3] [NAME=VALUE ...]   (3: on OpenSearch 3)
#                           the search node fault trials use: overload-prone, or
#                           with the settings given (e.g. http.max_content_length=8kb)
#   hack/stack.sh secure-search start|stop|user NAME PASSWORD
#                           Elasticsearch with security on, and its users (credential tests)
#   hack/stack.sh registry start|stop     an OCI registry (the image test pushes to it)
#   hack/stack.sh restart-apiserver       stop and start kube-apiserver (fault trials)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$HACK_DIR/lib/build.sh"
source "$HACK_DIR/lib/run.sh"

case "${1:-}" in
  up) stack_up ;;
  down)
    stack_down
    verify_down
    if [ "${2:-}" = "--purge" ]; then rm -rf "$DATA_DIR" "$PKI_DIR" "$LOGSUB_STATE/node" "$KUBECONFIG_FILE"; say "state purged"; fi ;;
  status) stack_status ;;
  env) stack_env ;;
  install)
    case "${2:-all}" in
      all) install_all ;;
      moto|seaweedfs) "install_$2" ;;
      etcd|kubernetes|helm|registry|toxiproxy|localnode) "build_$2" ;;
      search-nodes|image-tools) "install_${2//-/_}" ;;
      *) die "unknown install step: $2" ;;
    esac ;;
  fault-node)
    # An optional `3` after the action picks the OpenSearch 3 node.
    node=opensearch-faults rest=("${@:3}")
    if [ "${3:-}" = 3 ]; then node=opensearch3-faults rest=("${@:4}"); fi
    case "${2:-}" in
      start) start_fault_search_node "$node" "${rest[@]}" ;;
      stop) stop_service "$node" ;;
      *) die "usage: hack/stack.sh fault-node start|stop [3] [NAME=VALUE …]" ;;
    esac ;;
  secure-search)
    case "${2:-}" in
      start) start_secure_search_node ;;
      stop) stop_service elasticsearch-secure ;;
      user) secure_search_user "${3:?user}" "${4:?password}" ;;
      *) die "usage: hack/stack.sh secure-search start|stop|user NAME PASSWORD" ;;
    esac ;;
  registry)
    case "${2:-}" in
      start) build_registry && start_registry ;;
      stop) stop_service registry ;;
      *) die "usage: hack/stack.sh registry start|stop" ;;
    esac ;;
  restart-apiserver)
    stop_service kube-apiserver
    start_apiserver ;;
  *) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
