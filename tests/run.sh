#!/usr/bin/env bash
# Builds am2z with -Werror and runs the whole Check suite through ctest.
# Installs missing Debian packages first (deploy/install-deps.sh).
# Usage: bash tests/run.sh            (build dir: ./build)
#        AM2Z_SANITIZE=ON BUILD_DIR=build-asan bash tests/run.sh
#        AM2Z_TSAN=ON BUILD_DIR=build-tsan AM2Z_SUITES='^wset_test$' bash tests/run.sh
# AM2Z_SUITES: a ctest -R regex (default: every suite). Under ThreadSanitizer
# a report fails its suite (exit code 66); tests/tsan.supp lists what is
# not ours (uninstrumented libzmq / CZMQ).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DAM2Z_WERROR=ON -DAM2Z_SANITIZE="${AM2Z_SANITIZE:-OFF}" \
  -DAM2Z_TSAN="${AM2Z_TSAN:-OFF}" >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
if [ "${AM2Z_TSAN:-OFF}" = ON ]; then
  export TSAN_OPTIONS="suppressions=$PWD/tests/tsan.supp${TSAN_OPTIONS:+ $TSAN_OPTIONS}"
fi
cd "$BUILD_DIR"
ctest --output-on-failure -j"$(nproc)" ${AM2Z_SUITES:+-R "$AM2Z_SUITES"}
