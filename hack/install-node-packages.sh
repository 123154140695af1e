#!/usr/bin/env bash
# Install the distribution's packages that the real node and the image builds need, when missing:
# containerd and runc (the node's runtime), the CNI plugins, iptables, Docker's engine (builds
# only) with debootstrap (the Python base), and gcc with the static C library (the pause image).
#
#   hack/install-node-packages.sh             install what is missing (root, apt-get)
#   hack/install-node-packages.sh --check     exit 1, saying what is missing, without installing
#   hack/install-node-packages.sh PKG...      the same for the packages named (make lint: shellcheck)
set -euo pipefail

check=0
if [[ "${1:-}" == "--check" ]]; then check=1; shift; fi
PACKAGES=(containerd runc containernetworking-plugins iptables iproute2 docker.io debootstrap gcc libc6-dev)
[[ $# -gt 0 ]] && PACKAGES=("$@")

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $check -eq 1 ]]; then
  echo "missing distribution packages: ${missing[*]}"
  exit 1
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "missing distribution packages: ${missing[*]} (install them as root with apt-get)" >&2
  exit 1
fi
echo "[install-node-packages] installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
  || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
