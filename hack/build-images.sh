#!/usr/bin/env bash
# Build the project's images on this machine, with no container registry:
#
#   hack/build-images.sh            base, pause, operator and trainer images; export each to the cache
#   hack/build-images.sh --check    only say whether this machine can build them (exit 0 or 1)
#
# - The Python base is made from the distribution's own packages (debootstrap of the release this
#   machine runs, Python 3.11 from its python3 package) and passed to both Dockerfiles as
#   PYTHON_IMAGE, so nothing is pulled from a registry.
# - The pause image (the pod sandbox's process) is a small static C program, hack/node/pause.c.
# - Builds run in a Docker daemon of this script's own (state under the cache, no iptables, no
#   bridge, builds on the host network), started for the build and stopped after it.
# - Behind a TLS-intercepting proxy, pip inside the build needs the proxy's CA: BUILD_CA_BUNDLE
#   names a PEM bundle (public roots plus that CA) handed to the build as a BuildKit secret. It
#   defaults to the bundle the host's pip uses ($PIP_CERT), and never lands in an image.
# - Each image is exported once per image ID to $TORCHYARD_CACHE/images/<name>.tar, which
#   `hack/local-cluster.py up --real-node` imports into the node's containerd.
#
# Image names: torchyard/operator:local, torchyard/trainer:local, torchyard/pause:local (the
# `localhost/` prefix is how containerd spells an unqualified name).
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HACK_DIR")"
CACHE="${TORCHYARD_CACHE:-$HOME/.cache/torchyard}"
IMAGES="$CACHE/images"
DOCKER_STATE="$CACHE/docker"
TAG="${TORCHYARD_IMAGE_TAG:-local}"
BUILD_CA_BUNDLE="${BUILD_CA_BUNDLE:-${PIP_CERT:-}}"
# The Debian client matches the Debian daemon and builds with BuildKit without a buildx plugin.
DOCKER_CLI="${DOCKER_CLI:-/usr/bin/docker}"

log() { printf '[build-images] %s\n' "$*" >&2; }

missing_tools() {
  local tool absent=()
  for tool in dockerd "$DOCKER_CLI" debootstrap gcc; do
    command -v "$tool" >/dev/null || absent+=("$tool")
  done
  [[ $(id -u) -eq 0 ]] || absent+=("root")
  echo "${absent[*]}"
}

if [[ "${1:-}" == "--check" ]]; then
  missing=$(missing_tools)
  [[ -z "$missing" ]] && exit 0
  echo "cannot build images here: missing $missing (hack/install-node-packages.sh installs the tools)"
  exit 1
fi
missing=$(missing_tools)
[[ -z "$missing" ]] || { log "cannot build images: missing $missing (run hack/install-node-packages.sh as root)"; exit 1; }

# The distribution's release and mirror, read from this machine's own apt sources.
release=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)
mirror="${DEBIAN_MIRROR:-}"
if [[ -z "$mirror" ]]; then
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [[ -n "$mirror" ]] || mirror=$(awk '$1 == "deb" && $3 == "'"$release"'" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [[ -n "$mirror" ]] || { log "no Debian mirror in /etc/apt sources: set DEBIAN_MIRROR"; exit 1; }
fi

# -- the build daemon ---------------------------------------------------------------------------
sock="$DOCKER_STATE/docker.sock"
export DOCKER_HOST="unix://$sock" DOCKER_BUILDKIT=1
docker() { "$DOCKER_CLI" "$@"; }
started_dockerd=""
stop_dockerd() {
  [[ -n "$started_dockerd" ]] || return 0
  kill "$started_dockerd" 2>/dev/null || true
  for _ in $(seq 60); do kill -0 "$started_dockerd" 2>/dev/null || return 0; sleep 0.5; done
  kill -9 "$started_dockerd" 2>/dev/null || true
}
trap stop_dockerd EXIT
mkdir -p "$DOCKER_STATE" "$IMAGES"
if ! docker version >/dev/null 2>&1; then
  dockerd --data-root "$DOCKER_STATE/root" --exec-root "$DOCKER_STATE/exec" \
    --pidfile "$DOCKER_STATE/dockerd.pid" -H "$DOCKER_HOST" --group root \
    --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false --bridge=none \
    >"$DOCKER_STATE/dockerd.log" 2>&1 &
  started_dockerd=$!
  for _ in $(seq 120); do docker version >/dev/null 2>&1 && break; sleep 0.5; done
  docker version >/dev/null 2>&1 || { log "dockerd did not start: $DOCKER_STATE/dockerd.log"; exit 1; }
fi

# -- the base: the distribution's Python 3.11 ---------------------------------------------------
base="torchyard/python:3.11-$release"
if ! docker image inspect "$base" >/dev/null 2>&1; then
  log "making $base with debootstrap ($release) (about a minute)"
  rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    "$release" "$rootfs" "$mirror" >"$IMAGES/debootstrap.log" 2>&1 \
    || { log "debootstrap failed: $IMAGES/debootstrap.log"; rm -rf "$rootfs"; exit 1; }
  # What an image needs none of: apt's lists and caches, docs, the build host's resolver.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/usr/share/doc/* \
    "$rootfs"/usr/share/man/* "$rootfs"/etc/resolv.conf "$rootfs"/etc/hostname
  tar -C "$rootfs" -c . | docker import \
    -c 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["python3"]' - "$base" >/dev/null
  rm -rf "$rootfs"
fi

# -- pause --------------------------------------------------------------------------------------
pause="torchyard/pause:$TAG"
if ! docker image inspect "$pause" >/dev/null 2>&1; then
  log "building $pause"
  work=$(mktemp -d)
  gcc -static -Os -o "$work/pause" "$HACK_DIR/node/pause.c"
  strip "$work/pause"
  tar -C "$work" -c pause | docker import -c 'ENTRYPOINT ["/pause"]' -c 'USER 65535:65535' - "$pause" >/dev/null
  rm -rf "$work"
fi

# -- operator and trainer -----------------------------------------------------------------------
secret=()
if [[ -n "$BUILD_CA_BUNDLE" ]]; then
  [[ -r "$BUILD_CA_BUNDLE" ]] || { log "BUILD_CA_BUNDLE=$BUILD_CA_BUNDLE is not readable"; exit 1; }
  secret=(--secret "id=build-ca,src=$BUILD_CA_BUNDLE")
fi
build() {
  local image="$1" dockerfile="$2"; shift 2
  log "building $image from $dockerfile"
  local started; started=$(date +%s)
  docker build --network host --progress plain -f "$REPO/$dockerfile" -t "$image" \
    --build-arg "PYTHON_IMAGE=$base" "${secret[@]}" "$@" "$REPO" >"$IMAGES/build-${image//[\/:]/-}.log" 2>&1 \
    || { tail -n 30 "$IMAGES/build-${image//[\/:]/-}.log" >&2; log "building $image failed: $IMAGES/build-${image//[\/:]/-}.log"; exit 1; }
  log "built $image in $(( $(date +%s) - started ))s"
}
build "torchyard/operator:$TAG" Dockerfile
# PyPI's torch wheel is the CUDA build: it runs on CPU and needs no other index.
build "torchyard/trainer:$TAG" trainer-image/Dockerfile --build-arg TORCH_VARIANT=cuda

# The end-to-end tier's "user's own image": a plain torchrun script FROM the trainer image.
user_image="torchyard/e2e-user:$TAG"
log "building $user_image"
docker build --network host -t "$user_image" --build-arg "TRAINER_IMAGE=torchyard/trainer:$TAG" \
  "$REPO/tests/e2e/user-image" >"$IMAGES/build-e2e-user.log" 2>&1 \
  || { tail -n 30 "$IMAGES/build-e2e-user.log" >&2; log "building $user_image failed"; exit 1; }

# -- export, once per set of image IDs ----------------------------------------------------------
# One archive per group; the user image shares the trainer's layers, so it travels with it.
export_group() {
  local name="$1"; shift
  local ids; ids=$(docker image inspect -f '{{.Id}}' "$@")
  if [[ "$(cat "$IMAGES/$name.id" 2>/dev/null)" != "$ids" || ! -f "$IMAGES/$name.tar" ]]; then
    log "exporting $*"
    docker save "$@" -o "$IMAGES/$name.tar.tmp"
    mv "$IMAGES/$name.tar.tmp" "$IMAGES/$name.tar"
    echo "$ids" >"$IMAGES/$name.id"
  fi
}
export_group pause "$pause"
export_group operator "torchyard/operator:$TAG"
export_group trainer "torchyard/trainer:$TAG" "$user_image"
# Layers no tagged image uses any more (an earlier build's) only fill the disk; the build cache
# keeps what the current images were built from and a bounded remainder.
docker image prune -f >/dev/null
docker builder prune -f --keep-storage "${BUILD_CACHE_KEEP:-16GB}" >/dev/null
log "images ready in $IMAGES"
# A real node already running (hack/e2e.sh with E2E_KEEP_CLUSTER=1) gets them at once.
e2e_dir="${TORCHYARD_E2E_CLUSTER_DIR:-$CACHE/e2e-cluster}"
if [[ -S "$e2e_dir/node/containerd/containerd.sock" && -x "$REPO/.venv/bin/python" ]]; then
  "$REPO/.venv/bin/python" "$REPO/hack/local-cluster.py" --dir "$e2e_dir" import-images
fi
