#!/usr/bin/env bash
# Build the local control plane's binaries from Go modules, once, into a cache outside the repo.
#
#   hack/build-control-plane.sh            build whatever is missing, print the bin directory
#   hack/build-control-plane.sh --bench    also the benchmarks' peer (Kubeflow's training-operator)
#
# Binaries land in $TORCHYARD_CACHE/bin/<component>-<version>/ (default ~/.cache/torchyard),
# keyed by version, so a second run is a no-op and a version bump rebuilds only what changed.
# See docs/development.md for why each component is built the way it is.
set -euo pipefail

# Pinned versions live in hack/versions.env; an environment variable of the same name wins.
HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
while IFS='=' read -r key value; do
  [[ -z "$key" || "$key" == \#* ]] && continue
  [[ -n "${!key:-}" ]] || printf -v "$key" '%s' "$value"
done < "$HACK_DIR/versions.env"

CACHE="${TORCHYARD_CACHE:-$HOME/.cache/torchyard}"
SRC="$CACHE/src"
BIN="$CACHE/bin"
# One build at a time per cache: two at once would share each component's staging folder.
mkdir -p "$CACHE"
exec 9>"$CACHE/build.lock"
flock 9
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -trimpath"

log() { printf '[build-control-plane] %s\n' "$*" >&2; }

# A fresh module directory holding only a go.mod, so each component resolves its own dependencies.
new_module() {
  local dir="$1" name="$2"
  rm -rf "$dir" && mkdir -p "$dir"
  (cd "$dir" && go mod init "$name" >/dev/null 2>&1)
}

build_kubernetes() {
  local out="$BIN/kubernetes-$K8S_VERSION"
  local cmd missing=0
  for cmd in "${KUBE_COMMANDS[@]}"; do [[ -x "$out/$cmd" ]] || missing=1; done
  [[ $missing -eq 0 ]] && return
  log "building ${KUBE_COMMANDS[*]} $K8S_VERSION (5-10 min cold)"
  local mod="$SRC/kubernetes-$K8S_VERSION"
  new_module "$mod" torchyard.local/build/kubernetes
  cd "$mod"
  # k8s.io/kubernetes replaces its staging modules with ./staging paths; point each at its
  # published tag instead (v1.X.Y -> v0.X.Y). The list comes from the module's own go.mod.
  local gomod staging_version="v0.${K8S_VERSION#v1.}"
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  local replaces=()
  while read -r path; do
    replaces+=("-replace=$path=$path@$staging_version")
  done < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$gomod")
  go mod edit "${replaces[@]}" -godebug=default=go1.25
  local pkgs=()
  for cmd in "${KUBE_COMMANDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$cmd"); done
  go get -tool "${pkgs[@]/%/@$K8S_VERSION}"
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local flags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  mkdir -p "$out.tmp"
  # One build: the five commands share most of their packages.
  go build -ldflags "-s -w $flags" -o "$out.tmp/" "${pkgs[@]}"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# The control plane, and the node agents of the real node (same module, same stamping).
KUBE_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

build_etcd() {
  local out="$BIN/etcd-$ETCD_VERSION"
  [[ -x "$out/etcd" ]] && return
  log "building etcd $ETCD_VERSION"
  local mod="$SRC/etcd-$ETCD_VERSION"
  new_module "$mod" torchyard.local/build/etcd
  cd "$mod"
  go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  mkdir -p "$out.tmp"
  go build -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_kwok() {
  local out="$BIN/kwok-$KWOK_VERSION"
  [[ -x "$out/kwok" ]] && return
  log "building kwok $KWOK_VERSION"
  GOBIN="$out.tmp" go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  # The stage definitions ship in the module; keep a copy beside the binary.
  local moddir; moddir=$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION
  cp -r "$moddir/kustomize" "$out.tmp/kustomize" && chmod -R u+w "$out.tmp/kustomize"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_helm() {
  local out="$BIN/helm-$HELM_VERSION"
  [[ -x "$out/helm" ]] && return
  log "building helm $HELM_VERSION"
  # Like helm's own Makefile, stamp the Kubernetes version its client libraries speak: it is what
  # `helm template` and `helm lint` assume for a chart's kubeVersion (otherwise v1.20).
  local gomod kube_minor
  gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  kube_minor=$(awk '$1 == "k8s.io/client-go" {split($2, v, "."); print v[2]}' "$gomod")
  local flags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  flags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    flags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$kube_minor"
  done
  GOBIN="$out.tmp" go install -ldflags "$flags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# Cluster DNS for the real node: a CoreDNS holding only the plugins a cluster needs (its full
# plugin set pulls in every cloud SDK). The plugins' order is CoreDNS's own (core/dnsserver); a
# change of the list rebuilds.
COREDNS_PLUGINS=(bind cache errors health kubernetes log ready template)
build_coredns() {
  local out="$BIN/coredns-$COREDNS_VERSION"
  [[ -x "$out/coredns" && "$(cat "$out/plugins" 2>/dev/null)" == "${COREDNS_PLUGINS[*]}" ]] && return
  log "building coredns $COREDNS_VERSION (${COREDNS_PLUGINS[*]})"
  local mod="$SRC/coredns-$COREDNS_VERSION" plugin imports=""
  new_module "$mod" torchyard.local/build/coredns
  cd "$mod"
  for plugin in "${COREDNS_PLUGINS[@]}"; do
    imports+=$'\t_ "github.com/coredns/coredns/plugin/'"$plugin"$'"\n'
  done
  cat > main.go <<GO
// A CoreDNS with only the plugins a local cluster's DNS needs.
package main

import (
	_ "github.com/coredns/coredns/core/dnsserver"
${imports}
	"github.com/coredns/coredns/coremain"
)

func main() { coremain.Run() }
GO
  go get "github.com/coredns/coredns@$COREDNS_VERSION"
  go mod tidy
  mkdir -p "$out.tmp"
  go build -ldflags "-s -w" -o "$out.tmp/coredns" .
  echo "${COREDNS_PLUGINS[*]}" > "$out.tmp/plugins"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# An S3-compatible server for the storage tests (Apache-2.0; MinIO's server is AGPL).
build_versitygw() {
  local out="$BIN/versitygw-$VERSITYGW_VERSION"
  [[ -x "$out/versitygw" ]] && return
  log "building versitygw $VERSITYGW_VERSION"
  GOBIN="$out.tmp" go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# A real Prometheus and promtool, to scrape the operator and the pods in the tests and to unit-test
# the alerting rules. No web UI (its assets are built with npm; the HTTP API needs none) and only
# the service discovery the tests use (Prometheus's own remove_all_sd / enable_*_sd build tags).
build_prometheus() {
  local out="$BIN/prometheus-$PROMETHEUS_VERSION"
  [[ -x "$out/prometheus" && -x "$out/promtool" ]] && return
  log "building prometheus and promtool $PROMETHEUS_VERSION"
  local pkg=github.com/prometheus/prometheus version_pkg=github.com/prometheus/common/version
  # Module v0.MNN.P is Prometheus M.NN.P (v0.316.0 is 3.16.0).
  local minor="${PROMETHEUS_VERSION#v0.}"; minor="${minor%%.*}"
  local release="${minor:0:1}.$((10#${minor:1})).${PROMETHEUS_VERSION##*.}"
  local flags="-s -w -X $version_pkg.Version=$release -X $version_pkg.Branch=HEAD"
  GOBIN="$out.tmp" go install -tags netgo,remove_all_sd,enable_kubernetes_sd -ldflags "$flags" \
    "$pkg/cmd/prometheus@$PROMETHEUS_VERSION" "$pkg/cmd/promtool@$PROMETHEUS_VERSION"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# The peer of the side-by-side benchmark (benchmarks/kubeflow_side_by_side.py): the Kubeflow
# training-operator, in a module of its own so its Kubernetes libraries stay out of the
# control plane's. Its CRDs and webhook manifests ship in the module; keep a copy beside it.
build_kubeflow() {
  local out="$BIN/kubeflow-training-operator-$KUBEFLOW_TRAINING_OPERATOR_VERSION"
  [[ -x "$out/training-operator" ]] && return
  log "building the Kubeflow training-operator $KUBEFLOW_TRAINING_OPERATOR_VERSION"
  local mod="$SRC/kubeflow-training-operator-$KUBEFLOW_TRAINING_OPERATOR_VERSION"
  local pkg=github.com/kubeflow/training-operator
  new_module "$mod" torchyard.local/build/kubeflow-training-operator
  cd "$mod"
  go get -tool "$pkg/cmd/training-operator.v1@$KUBEFLOW_TRAINING_OPERATOR_VERSION"
  mkdir -p "$out.tmp"
  go build -ldflags "-s -w" -o "$out.tmp/training-operator" "$pkg/cmd/training-operator.v1"
  local moddir; moddir=$(go env GOMODCACHE)/$pkg@$KUBEFLOW_TRAINING_OPERATOR_VERSION
  cp -r "$moddir/manifests/base" "$out.tmp/manifests" && chmod -R u+w "$out.tmp/manifests"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# The real Kueue controller for the queueing tests (Apache-2.0). Its CRDs and webhook manifests ship
# in the module; keep a copy beside the binary (as for kwok), so the tests read Kueue's own.
build_kueue() {
  local out="$BIN/kueue-$KUEUE_VERSION"
  [[ -x "$out/kueue" ]] && return
  log "building kueue $KUEUE_VERSION"
  GOBIN="$out.tmp" go install -ldflags "-s -w" "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION"
  local moddir; moddir=$(go env GOMODCACHE)/sigs.k8s.io/kueue@$KUEUE_VERSION
  mkdir -p "$out.tmp/config"
  cp -r "$moddir/config/components/crd" "$moddir/config/components/webhook" "$out.tmp/config/"
  chmod -R u+w "$out.tmp/config"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

command -v go >/dev/null || { log "go (>= 1.25) is required: the binaries are built from Go modules"; exit 1; }
mkdir -p "$SRC" "$BIN"
started=$(date +%s)
build_etcd
build_kwok
build_helm
build_kubernetes
build_coredns
build_versitygw
build_kueue
build_prometheus
# The benchmark's peer only when asked: the tests never need it.
[[ "${1:-}" == "--bench" ]] && build_kubeflow
log "binaries ready in $BIN ($(( $(date +%s) - started ))s)"
echo "$BIN"
