# Starts, checks and stops the servers of the local stack.
# shellcheck shell=bash

KUBECONFIG_FILE="$LOGSUB_STATE/kubeconfig"
IMAGES_FILE="$LOGSUB_STATE/images.json"
# Start order; `down` stops in reverse.
SERVICES=(etcd kube-apiserver kube-controller-manager kube-scheduler localnode opensearch opensearch3 elasticsearch seaweedfs moto toxiproxy)

# A process's start time (clock ticks since boot): with the pid it names one
# process, so a pid file outliving its process never matches a recycled pid.
start_time_of() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  # Field 22 of stat is the 20th after the command name.
  awk '{print $20}' <<<"$stat"
}

write_pid() {
  local start; start="$(start_time_of "$2")" || die "$1 (pid $2) is not running"
  echo "$2 $start" >"$PID_DIR/$1.pid"
}

pid_of() {
  local f="$PID_DIR/$1.pid" pid start
  [ -f "$f" ] || return 1
  read -r pid start <"$f" || return 1
  [ -n "$pid" ] && [ "$(start_time_of "$pid")" = "$start" ] && echo "$pid"
}

is_running() { pid_of "$1" >/dev/null; }

# Starts a server in its own session with its output in the log directory.
spawn() {
  local name="$1"; shift
  mkdir -p "$PID_DIR" "$LOG_DIR"
  setsid "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
  write_pid "$name" $!
}

# Waits until a command succeeds, or fails naming the log to read.
wait_for() {
  local name="$1" timeout="$2"; shift 2
  local start=$SECONDS
  until "$@" >/dev/null 2>&1; do
    if [ $((SECONDS - start)) -ge "$timeout" ]; then
      tail -n 30 "$LOG_DIR/$name.log" >&2 2>/dev/null || true
      die "$name not healthy after ${timeout}s; log: $LOG_DIR/$name.log"
    fi
    if [ -f "$PID_DIR/$name.pid" ] && ! is_running "$name"; then
      tail -n 30 "$LOG_DIR/$name.log" >&2 2>/dev/null || true
      die "$name exited during start; log: $LOG_DIR/$name.log"
    fi
    sleep 0.3
  done
  say "$name ready ($((SECONDS - start)) s)"
}

# Waits until the object's condition TYPE is True. Unlike `kubectl wait`, an
# object whose status has no conditions yet (a CRD just created) is waited for,
# not an error.
wait_condition() { # object type timeout [kubectl args]
  local object="$1" type="$2" timeout="$3"; shift 3
  local start=$SECONDS status
  while :; do
    status="$(kubectl "$@" get "$object" -o "jsonpath={.status.conditions[?(@.type==\"$type\")].status}" 2>/dev/null || true)"
    [ "$status" = True ] && return 0
    [ $((SECONDS - start)) -lt "$timeout" ] || { say "$object: $type is not True after ${timeout}s"; return 1; }
    sleep 0.5
  done
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ensure_port_free() {
  local name="$1" port="$2"
  port_free "$port" || die "port 127.0.0.1:$port, needed by $name, is taken by another process (ss -ltnp 'sport = :$port')"
}

# --- PKI: a CA, the API server's serving cert, an admin client cert, SA keys ---

# Makes an EC P-256 key and a certificate signed by one of the stack's CAs
# (by default the cluster's), unless present.
issue_cert() { # name subject extensions [ca]
  local name="$1" ca="${4:-ca}"
  [ -f "$PKI_DIR/$name.crt" ] && return
  (
    cd "$PKI_DIR" || exit 1
    openssl ecparam -name prime256v1 -genkey -noout -out "$name.key" 2>/dev/null
    openssl req -new -key "$name.key" -subj "$2" -out "$name.csr" 2>/dev/null
    printf '%s\n' "$3" >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial -sha256 -days 3650 \
      -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
  )
}

make_ca() { # name common-name
  [ -f "$PKI_DIR/$1.crt" ] && return
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI_DIR/$1.key" 2>/dev/null
  openssl req -x509 -new -key "$PKI_DIR/$1.key" -sha256 -days 3650 -subj "/CN=$2" -out "$PKI_DIR/$1.crt" 2>/dev/null
}

make_pki() {
  mkdir -p "$PKI_DIR"
  make_ca ca logsub-local-ca
  issue_cert apiserver "/CN=kube-apiserver" "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth"
  issue_cert admin "/O=system:masters/CN=logsub-admin" "extendedKeyUsage=clientAuth"
  issue_cert kubelet "/CN=$NODE_NAME" "subjectAltName=IP:127.0.0.1,DNS:$NODE_NAME
extendedKeyUsage=serverAuth"
  if [ ! -f "$PKI_DIR/sa.key" ]; then
    openssl ecparam -name prime256v1 -genkey -noout -out "$PKI_DIR/sa.key" 2>/dev/null
    openssl ec -in "$PKI_DIR/sa.key" -pubout -out "$PKI_DIR/sa.pub" 2>/dev/null
  fi
  [ -f "$KUBECONFIG_FILE" ] && return
  cat >"$KUBECONFIG_FILE" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: logsub-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $PKI_DIR/ca.crt
users:
- name: logsub-admin
  user:
    client-certificate: $PKI_DIR/admin.crt
    client-key: $PKI_DIR/admin.key
contexts:
- name: logsub-local
  context: {cluster: logsub-local, user: logsub-admin}
current-context: logsub-local
EOF
}

# --- Kubernetes ---

start_etcd() {
  is_running etcd && return
  ensure_port_free etcd "$ETCD_CLIENT_PORT"
  mkdir -p "$DATA_DIR/etcd"
  spawn etcd "$ETCD_BIN/etcd" --name logsub --data-dir "$DATA_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "logsub=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync
  wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_CLIENT_PORT/health"
}

start_apiserver() {
  is_running kube-apiserver && return
  ensure_port_free kube-apiserver "$APISERVER_PORT"
  spawn kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$PKI_DIR/apiserver.crt" --tls-private-key-file "$PKI_DIR/apiserver.key" \
    --client-ca-file "$PKI_DIR/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI_DIR/sa.pub" --service-account-signing-key-file "$PKI_DIR/sa.key" \
    --service-cluster-ip-range 10.96.0.0/12 --authorization-mode Node,RBAC \
    --kubelet-preferred-address-types InternalIP --kubelet-certificate-authority "$PKI_DIR/ca.crt" \
    --kubelet-client-certificate "$PKI_DIR/admin.crt" --kubelet-client-key "$PKI_DIR/admin.key" \
    --profiling="${LOGSUB_STACK_PROFILING:-false}"
  wait_for kube-apiserver 60 curl -sf --cacert "$PKI_DIR/ca.crt" --cert "$PKI_DIR/admin.crt" --key "$PKI_DIR/admin.key" \
    "https://127.0.0.1:$APISERVER_PORT/readyz"
}

start_controller_manager() {
  is_running kube-controller-manager && return
  spawn kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$KUBECONFIG_FILE" --authentication-kubeconfig "$KUBECONFIG_FILE" --authorization-kubeconfig "$KUBECONFIG_FILE" \
    --service-account-private-key-file "$PKI_DIR/sa.key" --root-ca-file "$PKI_DIR/ca.crt" \
    --cluster-signing-cert-file "$PKI_DIR/ca.crt" --cluster-signing-key-file "$PKI_DIR/ca.key" \
    --use-service-account-credentials=true --leader-elect=false --bind-address 127.0.0.1 --secure-port 10257 \
    --profiling=false
  wait_for kube-controller-manager 60 "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" get serviceaccount default -n default
}

start_scheduler() {
  is_running kube-scheduler && return
  spawn kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig "$KUBECONFIG_FILE" --authentication-kubeconfig "$KUBECONFIG_FILE" --authorization-kubeconfig "$KUBECONFIG_FILE" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port 10259 --profiling=false
  wait_for kube-scheduler 30 curl -skf https://127.0.0.1:10259/healthz
}

# The project's image runs this repository's logsub binary; test images run the
# small programs under tests/images.
write_images() {
  local logsub_bin="${LOGSUB_BIN:-${CARGO_TARGET_DIR:-$REPO_DIR/target}/debug/logsub}"
  cat >"$IMAGES_FILE.tmp" <<EOF
{
  "images": {
    "logsub": "$logsub_bin",
    "logsub-test/probe": "$REPO_DIR/tests/images/probe.py"
  }
}
EOF
  mv "$IMAGES_FILE.tmp" "$IMAGES_FILE"
}

# The stack's servers a Pod may be pointed at: each Pod reaches them at its
# own 127.0.0.1 (the local node forwards these ports into its namespace).
service_ports() {
  local ports=("$APISERVER_PORT" "$OPENSEARCH_PORT" "$OPENSEARCH3_PORT" "$ELASTICSEARCH_PORT" "$FAULT_SEARCH_PORT"
    "$FAULT_SEARCH3_PORT" "$SECURE_SEARCH_PORT" "$S3_PORT" "$MOTO_PORT")
  local IFS=,
  echo "${ports[*]}"
}

start_localnode() {
  write_images
  is_running localnode && return
  ensure_port_free localnode "$LOCALNODE_HEALTH_PORT"
  ensure_port_free localnode "$KUBELET_PORT"
  spawn localnode "$LOCALNODE_BIN/localnode" --kubeconfig "$KUBECONFIG_FILE" --node-name "$NODE_NAME" \
    --state-dir "$LOGSUB_STATE/node" --log-dir "$LOG_DIR" --images "$IMAGES_FILE" \
    --api-host 127.0.0.1 --api-port "$APISERVER_PORT" --health-addr "127.0.0.1:$LOCALNODE_HEALTH_PORT" \
    --kubelet-addr "127.0.0.1:$KUBELET_PORT" --tls-cert "$PKI_DIR/kubelet.crt" --tls-key "$PKI_DIR/kubelet.key" \
    --client-ca "$PKI_DIR/ca.crt" --service-ports "$(service_ports)"
  wait_for localnode 30 curl -sf "http://127.0.0.1:$LOCALNODE_HEALTH_PORT/healthz"
  wait_for localnode 60 "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" wait --for=condition=Ready \
    "node/$NODE_NAME" --timeout=5s
  # The node lifecycle controller lifts the not-ready taint shortly after Ready.
  wait_for localnode 60 node_untainted
}

node_untainted() {
  [ -z "$("$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" get node "$NODE_NAME" -o jsonpath='{.spec.taints}')" ]
}

# --- Search nodes: as root they run as an unprivileged user, as they require ---

search_user_prefix() {
  if [ "$(id -u)" = 0 ]; then
    id "$SEARCH_USER" >/dev/null 2>&1 || useradd -r -M -d /nonexistent -s /usr/sbin/nologin "$SEARCH_USER"
    echo "runuser -u $SEARCH_USER --"
  fi
}

# Each node gets a private copy of its distribution: it writes its keystore there.
search_home() {
  local name="$1" home="$2" dir="$DATA_DIR/$1" prefix
  prefix="$(search_user_prefix)"
  if [ ! -f "$dir/home/.version" ] || [ "$(cat "$dir/home/.version")" != "$home" ]; then
    rm -rf "${dir:?}/home" && mkdir -p "$dir" && cp -a "$home" "$dir/home" && echo "$home" >"$dir/home/.version"
  fi
  mkdir -p "$dir/data" "$dir/run" "$LOG_DIR/$name"
  [ -z "$prefix" ] || chown -R "$SEARCH_USER" "$dir" "$LOG_DIR/$name"
}

# How long a search node may take to start: OpenSearch 3 takes up to a minute,
# and more while tests load both cores of a 2-core machine.
SEARCH_START_SECONDS=180

start_search_node() {
  local name="$1" home="$2" port="$3" tport="$4" launcher="$5" javavar="$6" optsvar="$7"; shift 7
  is_running "$name" && return
  ensure_port_free "$name" "$port"
  local dir="$DATA_DIR/$name" prefix
  prefix="$(search_user_prefix)"
  search_home "$name" "$home"
  rm -f "$dir/run/pid"
  env "$javavar=${SEARCH_JAVA_HOME:-$(java_home)}" "$optsvar=-Xms512m -Xmx512m" $prefix "$dir/home/bin/$launcher" -d -p "$dir/run/pid" \
    -Ediscovery.type=single-node -Enetwork.host=127.0.0.1 -Ehttp.port="$port" -Etransport.port="$tport" \
    -Epath.data="$dir/data" -Epath.logs="$LOG_DIR/$name" -Ecluster.routing.allocation.disk.threshold_enabled=false \
    -Ecluster.name="logsub-$name" "$@" >>"$LOG_DIR/$name.log" 2>&1 \
    || { tail -n 40 "$LOG_DIR/$name.log" >&2; die "$name did not start; logs: $LOG_DIR/$name.log, $LOG_DIR/$name/"; }
  # -d can return before the node writes its pid file: half a minute and more
  # when tests load both cores, so allow as long as the node has to answer.
  local waited=0
  until [ -s "$dir/run/pid" ]; do
    if [ "$waited" -ge $((SEARCH_START_SECONDS * 10)) ]; then
      # Without its pid the stack could never stop it, and it would hold its
      # port for good: found by its data path, which is its alone.
      pkill -KILL -f -- "-Epath.data=$dir/data" || true
      die "$name wrote no pid file in $SEARCH_START_SECONDS s (stopped); logs: $LOG_DIR/$name.log, $LOG_DIR/$name/"
    fi
    sleep 0.1; waited=$((waited + 1))
  done
  write_pid "$name" "$(cat "$dir/run/pid")"
}

wait_search_node() {
  local name="$1" port="$2"
  wait_for "$name" "$SEARCH_START_SECONDS" curl -sf "http://127.0.0.1:$port/_cluster/health?wait_for_status=yellow&timeout=1s"
}

start_search_nodes() {
  start_search_node opensearch "$OPENSEARCH_HOME" "$OPENSEARCH_PORT" "$OPENSEARCH_TRANSPORT_PORT" opensearch \
    OPENSEARCH_JAVA_HOME OPENSEARCH_JAVA_OPTS
  SEARCH_JAVA_HOME="$(java_home_at_least 21)" start_search_node opensearch3 "$OPENSEARCH3_HOME" \
    "$OPENSEARCH3_PORT" "$OPENSEARCH3_TRANSPORT_PORT" opensearch OPENSEARCH_JAVA_HOME OPENSEARCH_JAVA_OPTS
  start_search_node elasticsearch "$ELASTICSEARCH_HOME" "$ELASTICSEARCH_PORT" "$ELASTICSEARCH_TRANSPORT_PORT" elasticsearch \
    ES_JAVA_HOME ES_JAVA_OPTS -Expack.security.enabled=false
}

# OpenSearch with one write thread, a one-slot write queue and 4 KiB of indexing
# memory: it answers both whole-request 429s and 429 items inside a 200, the
# answers on which sinks lose data. Tests stop it to make an outage. Given
# settings (NAME=VALUE) instead, it runs with those: e.g. a lowered
# http.max_content_length, to answer 413. A node running with other settings
# is restarted. The first argument names the node: opensearch-faults (2.x)
# or opensearch3-faults.
start_fault_search_node() {
  local name="$1"; shift
  local settings=("$@") wanted current="$LOGSUB_STATE/$name.settings" home port tport java
  case "$name" in
    opensearch-faults) home="$OPENSEARCH_HOME" port="$FAULT_SEARCH_PORT" tport="$FAULT_SEARCH_TRANSPORT_PORT" java="$(java_home)" ;;
    opensearch3-faults) home="$OPENSEARCH3_HOME" port="$FAULT_SEARCH3_PORT" tport="$FAULT_SEARCH3_TRANSPORT_PORT" java="$(java_home_at_least 21)" ;;
    *) die "no fault node $name" ;;
  esac
  [ ${#settings[@]} -gt 0 ] || settings=(thread_pool.write.size=1 thread_pool.write.queue_size=1 indexing_pressure.memory.limit=4kb)
  wanted="${settings[*]}"
  if is_running "$name" && [ "$(cat "$current" 2>/dev/null)" != "$wanted" ]; then
    stop_service "$name"
  fi
  local args=() setting
  for setting in "${settings[@]}"; do args+=("-E$setting"); done
  echo "$wanted" >"$current"
  SEARCH_JAVA_HOME="$java" start_search_node "$name" "$home" "$port" "$tport" opensearch \
    OPENSEARCH_JAVA_HOME OPENSEARCH_JAVA_OPTS "${args[@]}"
  wait_search_node "$name" "$port"
}

# Elasticsearch with security on: basic auth and API keys over plain HTTP (a
# single node needs no transport TLS). `elastic`'s password comes from the
# keystore's bootstrap.password. The credential tests start and stop it.
start_secure_search_node() {
  local name=elasticsearch-secure
  if ! is_running "$name"; then
    search_home "$name" "$ELASTICSEARCH_HOME"
    local home="$DATA_DIR/$name/home" prefix
    prefix="$(search_user_prefix)"
    if [ ! -f "$home/config/elasticsearch.keystore" ]; then
      # shellcheck disable=SC2086 # $prefix is a command prefix or nothing
      { env ES_JAVA_HOME="$(java_home)" $prefix "$home/bin/elasticsearch-keystore" create \
        && printf '%s' "$SECURE_SEARCH_PASSWORD" \
          | env ES_JAVA_HOME="$(java_home)" $prefix "$home/bin/elasticsearch-keystore" add -x bootstrap.password; } \
        >>"$LOG_DIR/$name.log" 2>&1 || die "$name: keystore; logs: $LOG_DIR/$name.log"
    fi
    # HTTPS with a certificate from a CA of its own, so that the cluster's CA
    # is a real CA that did not sign it (a wrong CA for the tests).
    mkdir -p "$PKI_DIR" "$home/config/certs"
    make_ca search-ca logsub-search-ca
    issue_cert search "/CN=elasticsearch-secure" "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth" search-ca
    cp "$PKI_DIR/search.crt" "$PKI_DIR/search.key" "$PKI_DIR/search-ca.crt" "$home/config/certs/"
    rm -rf "$home/modules/security-analysis" && cp -r "$SECURITY_ANALYSIS_MODULE" "$home/modules/security-analysis"
    start_search_node "$name" "$ELASTICSEARCH_HOME" "$SECURE_SEARCH_PORT" "$SECURE_SEARCH_TRANSPORT_PORT" \
      elasticsearch ES_JAVA_HOME ES_JAVA_OPTS -Expack.security.enabled=true \
      -Expack.security.http.ssl.enabled=true -Expack.security.http.ssl.certificate=certs/search.crt \
      -Expack.security.http.ssl.key=certs/search.key -Expack.security.transport.ssl.enabled=false \
      -Eresource.reload.interval.high=1s
  fi
  wait_for "$name" 120 curl -sf --cacert "$PKI_DIR/search-ca.crt" -u "elastic:$SECURE_SEARCH_PASSWORD" \
    "https://127.0.0.1:$SECURE_SEARCH_PORT/_cluster/health?wait_for_status=yellow&timeout=1s"
}

# Adds a file-realm superuser to the secured node, or changes its password.
# The node reads the file again within a second.
secure_search_user() {
  local user="$1" password="$2" home="$DATA_DIR/elasticsearch-secure/home" prefix
  prefix="$(search_user_prefix)"
  if grep -q "^$user:" "$home/config/users" 2>/dev/null; then
    # shellcheck disable=SC2086
    env ES_JAVA_HOME="$(java_home)" $prefix "$home/bin/elasticsearch-users" passwd "$user" -p "$password"
  else
    # shellcheck disable=SC2086
    env ES_JAVA_HOME="$(java_home)" $prefix "$home/bin/elasticsearch-users" useradd "$user" -p "$password" -r superuser
  fi
}

# --- An OCI registry: the image test pushes to it ---

start_registry() {
  is_running registry && return
  ensure_port_free registry "$REGISTRY_PORT"
  mkdir -p "$LOGSUB_STATE" "$DATA_DIR/registry"
  cat >"$LOGSUB_STATE/registry.yml" <<YAML
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $DATA_DIR/registry}
http:
  addr: 127.0.0.1:$REGISTRY_PORT
YAML
  spawn registry "$REGISTRY_BIN/registry" serve "$LOGSUB_STATE/registry.yml"
  wait_for registry 30 curl -sf "http://127.0.0.1:$REGISTRY_PORT/v2/"
}

# --- S3 and AWS ---

# Every bucket is a collection with volumes of its own, and by default the volume
# count follows the free disk (1 GiB each): a long-lived stack that many test runs
# fill with buckets runs out of writable volumes. Small volumes, many allowed.
start_seaweedfs() {
  is_running seaweedfs && return
  ensure_port_free seaweedfs "$S3_PORT"
  mkdir -p "$DATA_DIR/seaweedfs"
  cat >"$LOGSUB_STATE/s3-identities.json" <<EOF
{"identities": [{"name": "logsub-test",
  "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$S3_SECRET_KEY"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
  spawn seaweedfs "$SEAWEED_VENV/bin/weed" mini -dir="$DATA_DIR/seaweedfs" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -s3.port="$S3_PORT" -s3.config="$LOGSUB_STATE/s3-identities.json" -admin.ui=false -webdav=false \
    -s3.port.iceberg=0 -s3.port.lance=0 -s3.autoCreateBucket=false \
    -volume.max=1000 -master.volumeSizeLimitMB=64
  wait_for seaweedfs 60 curl -sf --aws-sigv4 "aws:amz:$AWS_TEST_REGION:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
    "http://127.0.0.1:$S3_PORT/"
}

start_moto() {
  is_running moto && return
  ensure_port_free moto "$MOTO_PORT"
  spawn moto "$VENV/bin/python" "$HACK_DIR/moto/launcher.py" --host 127.0.0.1 --port "$MOTO_PORT"
  wait_for moto 30 curl -sf "http://127.0.0.1:$MOTO_PORT/moto-api/"
}

# Proxies are made by the tests that need them, through its API; none is
# configured at start.
start_toxiproxy() {
  is_running toxiproxy && return
  ensure_port_free toxiproxy "$TOXIPROXY_PORT"
  spawn toxiproxy "$TOXIPROXY_BIN/toxiproxy-server" -host 127.0.0.1 -port "$TOXIPROXY_PORT"
  wait_for toxiproxy 30 curl -sf "http://127.0.0.1:$TOXIPROXY_PORT/version"
}

# --- Commands ---

stack_up() {
  install_all
  mkdir -p "$LOGSUB_STATE" "$LOG_DIR" "$PID_DIR" "$DATA_DIR"
  local start=$SECONDS
  make_pki
  # The search nodes take longest: start them first, check them last.
  start_search_nodes
  start_etcd
  start_apiserver
  start_controller_manager
  start_scheduler
  start_localnode
  start_seaweedfs
  start_moto
  start_toxiproxy
  wait_search_node opensearch "$OPENSEARCH_PORT"
  wait_search_node elasticsearch "$ELASTICSEARCH_PORT"
  wait_search_node opensearch3 "$OPENSEARCH3_PORT"
  say "stack up in $((SECONDS - start)) s; logs in $LOG_DIR"
  say "use it: eval \"\$(hack/stack.sh env)\""
}

stop_service() {
  local name="$1" pid
  pid="$(pid_of "$name")" || { rm -f "$PID_DIR/$name.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  local waited=0
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$waited" -ge 150 ]; then
      say "$name ($pid) ignored SIGTERM for 15 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      break
    fi
    sleep 0.1; waited=$((waited + 1))
  done
  rm -f "$PID_DIR/$name.pid"
  say "stopped $name"
}

stack_down() {
  local i
  stop_service opensearch-faults
  stop_service opensearch3-faults
  stop_service elasticsearch-secure
  stop_service registry
  for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
    stop_service "${SERVICES[$i]}"
  done
  # Containers whose local node died without stopping them.
  local f pgid start
  for f in "$LOGSUB_STATE"/node/pods/*/*.pid; do
    [ -f "$f" ] || continue
    read -r pgid start <"$f" || true
    if [ -n "$pgid" ] && [ "$(start_time_of "$pgid")" = "$start" ]; then
      kill -KILL -- "-$pgid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
}

# Every port the stack listens on, for `down` to prove it freed them.
stack_ports() {
  echo "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" 10257 10259 "$LOCALNODE_HEALTH_PORT" "$KUBELET_PORT" \
    "$OPENSEARCH_PORT" "$OPENSEARCH_TRANSPORT_PORT" "$OPENSEARCH3_PORT" "$OPENSEARCH3_TRANSPORT_PORT" "$ELASTICSEARCH_PORT" "$ELASTICSEARCH_TRANSPORT_PORT" \
    "$FAULT_SEARCH_PORT" "$FAULT_SEARCH_TRANSPORT_PORT" "$FAULT_SEARCH3_PORT" "$FAULT_SEARCH3_TRANSPORT_PORT" "$SECURE_SEARCH_PORT" "$SECURE_SEARCH_TRANSPORT_PORT" "$REGISTRY_PORT" "$S3_PORT" 9333 8888 18888 19333 "$MOTO_PORT" "$TOXIPROXY_PORT"
}

verify_down() {
  local port busy=()
  for port in $(stack_ports); do port_free "$port" || busy+=("$port"); done
  [ ${#busy[@]} -eq 0 ] || die "ports still in use after down: ${busy[*]}"
  say "every stack port is free"
}

stack_status() {
  local name rc=0
  for name in "${SERVICES[@]}"; do
    if pid="$(pid_of "$name")"; then printf '%-24s running (pid %s)\n' "$name" "$pid"
    else printf '%-24s stopped\n' "$name"; rc=1; fi
  done
  return $rc
}

stack_env() {
  cat <<EOF
export KUBECONFIG=$KUBECONFIG_FILE
export PATH=$K8S_BIN:$HELM_BIN:\$PATH
export LOGSUB_STACK=1
export LOGSUB_STACK_LOGS=$LOG_DIR
export LOGSUB_STACK_LOCKS=$LOGSUB_STATE/locks
export LOGSUB_STACK_NODE=$NODE_NAME
export LOGSUB_STACK_IMAGES=$IMAGES_FILE
export OPENSEARCH_URL=http://127.0.0.1:$OPENSEARCH_PORT
export OPENSEARCH3_URL=http://127.0.0.1:$OPENSEARCH3_PORT
export ELASTICSEARCH_URL=http://127.0.0.1:$ELASTICSEARCH_PORT
export FAULT_SEARCH_URL=http://127.0.0.1:$FAULT_SEARCH_PORT
export FAULT_SEARCH3_URL=http://127.0.0.1:$FAULT_SEARCH3_PORT
export SECURE_SEARCH_URL=https://127.0.0.1:$SECURE_SEARCH_PORT
export SECURE_SEARCH_CA=$PKI_DIR/search-ca.crt
export SECURE_SEARCH_PASSWORD=$SECURE_SEARCH_PASSWORD
export LOGSUB_REGISTRY=127.0.0.1:$REGISTRY_PORT
export TOXIPROXY_URL=http://127.0.0.1:$TOXIPROXY_PORT
export AWS_ENDPOINT_URL_CLOUDWATCH_LOGS=http://127.0.0.1:$MOTO_PORT
export AWS_ENDPOINT_URL_KINESIS=http://127.0.0.1:$MOTO_PORT
export AWS_ENDPOINT_URL_STS=http://127.0.0.1:$MOTO_PORT
export AWS_ENDPOINT_URL_IAM=http://127.0.0.1:$MOTO_PORT
export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$S3_PORT
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
export AWS_REGION=$AWS_TEST_REGION
export AWS_EC2_METADATA_DISABLED=true
EOF
}
