#!/usr/bin/env bash
# Builds Strata and runs every test: unit, conformance, integration and interop.
#
#   scripts/test.sh            release build (warnings are errors) + the full suite
#   STRATA_SANITIZE=1 scripts/test.sh   also an ASan+UBSan build running the suite
#
# Exits non-zero if the build fails, any test fails, or no test ran.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

jobs=$(nproc)
run_suite() {
  local dir=$1; shift
  cmake -S . -B "$dir" -G Ninja -DSTRATA_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
  ctest --test-dir "$dir" --output-on-failure --no-tests=error -j "$jobs" --timeout 600
}

run_suite build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [ "${STRATA_SANITIZE:-0}" = "1" ]; then
  run_suite build/debug -DCMAKE_BUILD_TYPE=Debug -DSTRATA_SANITIZE=ON
fi
