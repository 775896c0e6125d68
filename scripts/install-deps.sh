#!/usr/bin/env bash
# Installs everything Strata needs to build, test and run its interop checks on Debian 12.
# Idempotent; run as root (or with sudo available).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

build_deps=(
  build-essential cmake ninja-build pkg-config clang
  libasio-dev liburing-dev nlohmann-json3-dev libfmt-dev libcli11-dev libexpected-dev
  zlib1g-dev libzstd-dev libgnutls28-dev libgtest-dev libgmock-dev libbenchmark-dev libreadline-dev
)
# The reference tools the interop tests and benchmarks run against.
interop_deps=(qemu-utils nbdkit libnbd-bin fio python3 graphviz)

missing=()
for p in "${build_deps[@]}" "${interop_deps[@]}" qemu-system-common; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "strata: all dependencies are installed"
  exit 0
fi

echo "strata: installing ${missing[*]}"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${build_deps[@]}" "${interop_deps[@]}" >/dev/null
# qemu-storage-daemon; without recommends this stays at about ten packages.
$SUDO apt-get install -y -qq --no-install-recommends qemu-system-common >/dev/null
