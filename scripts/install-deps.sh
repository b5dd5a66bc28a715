#!/usr/bin/env bash
# Installs the Debian packages flashload builds and tests with. Idempotent: does nothing when all are
# present. Needs root (or sudo) only when something is missing.
#   scripts/install-deps.sh         build and test dependencies
#   scripts/install-deps.sh torch   also Debian's CPU build of PyTorch (for the torch tests)
set -euo pipefail
pkgs=(cmake ninja-build g++ clang pkg-config liburing-dev libsimdjson-dev libcli11-dev libfmt-dev
      libxxhash-dev libdlpack-dev libgtest-dev libgmock-dev fio python3-venv python3-dev
      libcurl4-openssl-dev libssl-dev libfuse3-dev fuse3 curl libzstd-dev zstd tar
      libarchive-tools openmpi-bin libopenmpi-dev)
[ "${1:-}" = "torch" ] && pkgs+=(python3-torch python3-pip)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
