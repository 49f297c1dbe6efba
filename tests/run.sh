#!/usr/bin/env bash
# Builds am2z with -Werror and runs the whole Check suite through ctest.
# Installs missing Debian packages first (deploy/install-deps.sh).
# Usage: bash tests/run.sh            (build dir: ./build)
#        AM2Z_SANITIZE=ON BUILD_DIR=build-asan bash tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DAM2Z_WERROR=ON -DAM2Z_SANITIZE="${AM2Z_SANITIZE:-OFF}" >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
cd "$BUILD_DIR"
ctest --output-on-failure -j"$(nproc)"
