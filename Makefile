# Everyday tasks. docs/development.md explains the tiers and the local control plane.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST := $(PY) -m pytest
# The local control plane; its state lives outside the repository ($TORCHYARD_CLUSTER_DIR).
CLUSTER := $(PY) hack/local-cluster.py

EXAMPLE ?= examples/digits-ps.yaml

.PHONY: run venv binaries images test test-unit test-trainer test-integration test-e2e cluster-up cluster-down bench lint chart-crds e2e

# Create the virtualenv on first use only; `make venv` reinstalls on demand.
$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e '.[trainer,test]'

venv:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e '.[trainer,test]'

# The main job on a machine with no cluster: train the example as local processes.
run: $(PY)
	$(VENV)/bin/torchyard run $(EXAMPLE)

# The control plane's and the node's binaries and helm, built from Go modules once (cached in
# ~/.cache/torchyard); a no-op afterwards.
binaries:
	@bash hack/build-control-plane.sh >/dev/null

# Both images and the node's pause image, built here without a registry (docs/development.md).
images:
	bash hack/build-images.sh

# Lint and every tier, even when an earlier one fails; non-zero if any failed.
test: $(PY)
	@status=0; \
	$(MAKE) lint || status=1; \
	$(MAKE) test-unit || status=1; \
	$(MAKE) test-trainer || status=1; \
	$(MAKE) test-integration || status=1; \
	$(MAKE) test-e2e || status=1; \
	exit $$status

# The chart tests render with helm, so the unit tier needs the binaries too.
test-unit: $(PY) binaries
	$(PYTEST) tests/unit

# The storage tests run a real S3 server, built with the other binaries.
test-trainer: $(PY) binaries
	$(PYTEST) tests/trainer

# Runs against the local control plane (started if needed), never against $KUBECONFIG from the
# shell: run pytest directly to test another cluster.
test-integration: cluster-up
	KUBECONFIG="$$($(CLUSTER) kubeconfig)" $(PYTEST) tests/integration

# Real containers: a cluster with one real node, the images built and imported, the chart
# installed, tests/e2e run, the cluster stopped (hack/e2e.sh; skips with one line without root).
test-e2e: $(PY)
	bash hack/e2e.sh

# Builds the control plane's binaries the first time (cached in ~/.cache/torchyard), then starts
# it in seconds; a no-op when it already runs.
cluster-up: $(PY)
	$(CLUSTER) up

cluster-down: $(PY)
	$(CLUSTER) down

# Figures, not pass/fail: docs/benchmarks.md records them. The cluster ones use the local control plane.
bench: cluster-up
	@bash hack/build-control-plane.sh --bench >/dev/null
	$(PY) benchmarks/trainer_throughput.py --workers 2 --epochs 6
	KUBECONFIG="$$($(CLUSTER) kubeconfig)" $(PY) benchmarks/operator_scale.py --jobs 100
	KUBECONFIG="$$($(CLUSTER) kubeconfig)" $(PY) benchmarks/kubeflow_side_by_side.py --jobs 200 --rounds 2
	KUBECONFIG="$$($(CLUSTER) kubeconfig)" $(PY) benchmarks/kubeflow_side_by_side.py --jobs 1000 --rounds 2 \
		--only torchyard --only tuned --settle 30
	KUBECONFIG="$$($(CLUSTER) kubeconfig)" $(PY) benchmarks/failover_latency.py --trials 20
	$(PY) benchmarks/serving_throughput.py

# helm lint (strict) of the chart and shellcheck of every shell script; the chart's CRDs must be
# the repository's (tests/unit/test_chart.py checks it too).
SHELL_SCRIPTS := $(wildcard hack/*.sh) .ci/run
lint: $(PY) binaries
	@bash hack/install-node-packages.sh shellcheck
	@helm=$$($(CLUSTER) which helm) || { echo "helm is not built: bash hack/build-control-plane.sh" >&2; exit 1; }; \
	echo "$$helm lint --strict charts/torchyard"; "$$helm" lint --strict charts/torchyard
	shellcheck $(SHELL_SCRIPTS)
	@$(PY) -m ruff --version >/dev/null 2>&1 || { echo "ruff is not in $(VENV): make venv" >&2; exit 1; }
	$(PY) -m ruff check operator trainer-image tests benchmarks hack

# Copy crds/ (the one source) into the chart after changing a CRD.
chart-crds:
	cp crds/*.yaml charts/torchyard/crds/

# The integration tests and tests/e2e on a kind cluster with real images (needs Docker and kind;
# says so and exits 0 without them). See docs/install.md.
e2e: $(PY)
	bash hack/kind-e2e.sh
