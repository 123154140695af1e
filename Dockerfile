# The operator image: the torchyard package with kopf, the Kubernetes client and prometheus-client
# at the versions pyproject.toml pins. No torch: the operator never imports it. Built with BuildKit
# (the default builder of current Docker; DOCKER_BUILDKIT=1 on older ones):
#
#   docker build -t torchyard/operator:0.1.0 .
#
# Behind a TLS-intercepting proxy, hand pip a CA bundle that includes the proxy's CA as a build
# secret: `--secret id=build-ca,src=/path/to/bundle.pem` (mounted for the pip steps only, never
# stored in a layer).
# PYTHON_IMAGE may name the base by digest (python:3.11-slim-bookworm@sha256:...) for a build that
# cannot change under you. The image runs as uid 65532 and needs no writable root filesystem.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The dependencies first, in a layer only pyproject.toml changes.
COPY pyproject.toml README.md ./
RUN --mount=type=secret,id=build-ca \
    set -eu; \
    if [ -s /run/secrets/build-ca ]; then export PIP_CERT=/run/secrets/build-ca; fi; \
    python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > requirements.txt; \
    python -m venv /opt/torchyard; \
    /opt/torchyard/bin/pip install -r requirements.txt
COPY operator/torchyard/ operator/torchyard/
# The package the operator shares with the trainer image (env contract, trainer settings, topology).
COPY operator/torchyard_spec/ operator/torchyard_spec/
# The package list also searches trainer-image/; left empty, the trainer is not installed.
RUN --mount=type=secret,id=build-ca \
    set -eu; \
    if [ -s /run/secrets/build-ca ]; then export PIP_CERT=/run/secrets/build-ca; fi; \
    mkdir trainer-image; \
    /opt/torchyard/bin/pip install --no-deps .; \
    /opt/torchyard/bin/python -c "import torchyard.cli, torchyard.handlers.lifecycle, torchyard.handlers.trainingjob"; \
    if /opt/torchyard/bin/python -c "import torch" 2>/dev/null; then echo "torch leaked into the operator image" >&2; exit 1; fi

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 65532 torchyard \
 && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin torchyard
COPY --from=build /opt/torchyard /opt/torchyard
ENV PATH=/opt/torchyard/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
WORKDIR /tmp
# Health, Prometheus metrics and the pods' progress reports.
EXPOSE 8080
ENTRYPOINT ["torchyard"]
CMD ["operator"]
