#!/usr/bin/env bash
# README command 1: installs dependencies, builds am2z and runs the
# order-processing demo on the embedded runtime (broker and worker as
# threads in one process, LMDB under ./am2z-data in the working directory).
# Usage: bash examples/demo.sh [--distributed]
#   --distributed  the same demo with am2z-broker and two am2z-example-worker
#                  processes over TCP on 127.0.0.1 (examples/demo-distributed.sh)
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
bash "$src/deploy/install-deps.sh"
BUILD_DIR=${BUILD_DIR:-$src/build}
cmake -S "$src" -B "$BUILD_DIR" >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" --target am2z-demo am2z-broker am2z-example-worker >/dev/null
if [ "${1:-}" = "--distributed" ]; then
  exec bash "$src/examples/demo-distributed.sh" "$BUILD_DIR"
fi
exec "$BUILD_DIR/examples/am2z-demo"
