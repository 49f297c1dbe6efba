#!/usr/bin/env bash
# The demo with real processes: one am2z-broker and two am2z-example-worker
# processes on 127.0.0.1 (ephemeral ports), LMDB under ./am2z-data-distributed.
# Usage: bash examples/demo-distributed.sh [BUILD_DIR]   (after a build)
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$src/build}"
data="./am2z-data-distributed"
log="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$log"
}
trap cleanup EXIT

"$build/broker/am2z-broker" --data-dir "$data" \
  --frontend 'tcp://127.0.0.1:*' --backend 'tcp://127.0.0.1:*' --events 'tcp://127.0.0.1:*' \
  >"$log/broker.out" &
pids+=($!)
for _ in $(seq 100); do grep -q ready "$log/broker.out" && break; sleep 0.1; done
line="$(grep ready "$log/broker.out")" || { echo "demo: broker did not start" >&2; exit 2; }
echo "$line"
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
frontend="$(field frontend)"; backend="$(field backend)"

for id in worker-1 worker-2; do
  "$build/examples/am2z-example-worker" --broker "$backend" --id "$id" >"$log/$id.out" &
  pids+=($!)
done
for id in worker-1 worker-2; do
  for _ in $(seq 100); do grep -q ready "$log/$id.out" && break; sleep 0.1; done
  grep ready "$log/$id.out" || { echo "demo: $id did not start" >&2; exit 2; }
done
"$build/examples/am2z-demo" --broker "$frontend"
