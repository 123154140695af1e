#!/usr/bin/env bash
# The end-to-end tier on this machine: a local control plane with one real node (containerd,
# kubelet, kube-proxy, DNS), both images built here without a registry and imported into the
# node, the chart installed with them, then tests/e2e against real containers. `make test-e2e`
# runs it; hack/kind-e2e.sh runs the same tests on kind.
#
# Where a real node cannot run (not root, no apt-get to install the distribution's containerd,
# runc and CNI plugins), it prints one line saying why and exits 0: it never pretends to pass.
#
# Environment:
#   TORCHYARD_E2E_CLUSTER_DIR  the cluster's state directory ($TORCHYARD_CACHE/e2e-cluster)
#   E2E_KEEP_CLUSTER           1 keeps the cluster afterwards (its kubeconfig path is printed)
#   PYTEST_ARGS                extra pytest arguments (for example `-k failover`)
#   TORCHYARD_E2E_HOST_PROMETHEUS  0 skips the dashboard check through a Prometheus on the host
#   BUILD_CA_BUNDLE            CA bundle for pip inside image builds (hack/build-images.sh)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=.venv/bin/python
CACHE="${TORCHYARD_CACHE:-$HOME/.cache/torchyard}"
DIR="${TORCHYARD_E2E_CLUSTER_DIR:-$CACHE/e2e-cluster}"
RELEASE="torchyard"
RELEASE_NAMESPACE="torchyard-system"
WATCHED_NAMESPACE="torchyard-e2e"
started=$(date +%s)

say() { printf '[e2e] %s (%ds)\n' "$*" "$(( $(date +%s) - started ))"; }

if [[ $(id -u) -ne 0 ]]; then
  say "skipped: the real node needs root (kubelet, containerd, a bridge and iptables rules)"
  exit 0
fi
if ! why=$(bash hack/install-node-packages.sh 2>&1); then
  say "skipped: $why"
  exit 0
fi

cluster() { "$PY" hack/local-cluster.py --dir "$DIR" "$@"; }
snapshots="$(mktemp -d)"
# shellcheck disable=SC2317  # runs through the EXIT trap
cleanup() {
  local status=$?
  if [[ "${E2E_KEEP_CLUSTER:-0}" == 1 ]]; then
    say "cluster kept: export KUBECONFIG=$DIR/kubeconfig; stop it with: $PY hack/local-cluster.py --dir $DIR down"
  elif [[ -f "$snapshots/before.json" ]]; then
    cluster down >/dev/null 2>&1 || { say "could not stop the cluster in $DIR"; status=1; }
    # `down` must leave the host exactly as `up` found it.
    cluster host-snapshot >"$snapshots/after.json"
    if ! diff -u "$snapshots/before.json" "$snapshots/after.json" >&2; then
      say "the host differs after down (above: - before up, + after down)"
      status=1
    else
      say "cluster stopped; the host is as before"
    fi
  fi
  rm -rf "$snapshots"
  exit "$status"
}
trap cleanup EXIT

bash hack/build-control-plane.sh >/dev/null
say "binaries ready"
bash hack/build-images.sh
say "images ready"
cluster down >/dev/null  # a cluster left by an earlier run, kept or interrupted
cluster host-snapshot >"$snapshots/before.json"
cluster up --real-node --no-kwok
export KUBECONFIG="$DIR/kubeconfig"
say "cluster with a real node up"

HELM=$(cluster which helm)
KUBECTL=.venv/bin/kubectl
"$KUBECTL" create namespace "$WATCHED_NAMESPACE" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
# The node has two CPUs, which the examples' training pods fill: the operator asks for little.
"$HELM" upgrade --install "$RELEASE" charts/torchyard --namespace "$RELEASE_NAMESPACE" --create-namespace \
  --set image.tag=local --set image.pullPolicy=Never \
  --set trainer.image.tag=local --set trainer.image.pullPolicy=Never \
  --set resources.requests.cpu=10m \
  --set "watchNamespaces={$WATCHED_NAMESPACE}" \
  --wait --timeout 5m >/dev/null
say "chart installed"

export TORCHYARD_E2E_RELEASE="$RELEASE" TORCHYARD_E2E_RELEASE_NAMESPACE="$RELEASE_NAMESPACE"
export TORCHYARD_E2E_NAMESPACE="$WATCHED_NAMESPACE" TORCHYARD_E2E_IMAGE_TAG=local
export TORCHYARD_E2E_RUNTIME=local TORCHYARD_E2E_CONTAINERD="$DIR/node/containerd/containerd.sock"
# The host reaches the node's pods, so a Prometheus on the host scrapes them as one in the cluster would.
export TORCHYARD_E2E_HOST_PROMETHEUS="${TORCHYARD_E2E_HOST_PROMETHEUS:-1}"
status=0
# shellcheck disable=SC2086  # PYTEST_ARGS is a list of arguments
"$PY" -m pytest tests/e2e -v ${PYTEST_ARGS:-} || status=$?
if [[ $status -ne 0 ]]; then
  "$KUBECTL" --namespace "$RELEASE_NAMESPACE" logs "deployment/$RELEASE" --tail 200 || true
fi
say "e2e tests done"
exit "$status"
