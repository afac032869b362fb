#!/usr/bin/env bash
# Installs the Debian 12 packages attn builds and tests with; does nothing when all are present.
# Usage: tools/setup.sh [extra-package ...]   (run as root, or with sudo available)
set -euo pipefail

packages=(
  cmake ninja-build g++ pkg-config git
  libxsimd-dev libtbb-dev libbenchmark-dev catch2 libcli11-dev nlohmann-json3-dev
  libcpp-httplib-dev  # attn serve and attn loadgen (HTTP)
  clang-format  # Debian 12: version 14, what tools/check_format.sh enforces
  openmpi-bin libopenmpi-dev  # attn_distributed (heads across processes) and its mpirun tests
  python3-dev pybind11-dev python3-pybind11 python3-pytest python3-numpy python3-torch  # the Python module and its tests
  libopenblas0-pthread
  "$@"
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# A fresh image may have empty package lists: install, and update once if that fails.
$sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
  $sudo apt-get update -q >/dev/null
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}
