#!/usr/bin/env bash
# Starts am2z-broker and one am2z-example-worker on 127.0.0.1 (ephemeral
# ports, a fresh data dir), runs am2z-bench against them, stops them.
# Usage: bash bench/run-core.sh [sync|periodic] [am2z-bench flags...]
# Needs a build in ./build (bash tests/run.sh or cmake --build build).
# BROKER_ARGS="--flag value ..." adds broker flags (e.g. --retain-completed).
# Prints the bench's lines, then the CPU time (user + system, ms) the
# broker and the worker used while it measured (up to its first figure:
# not the tidying after it), and their peak RSS (VmHWM)
# with what is resident now split anonymous / file-backed (KiB). With
# SMAPS_DIR=DIR set it also copies each one's /proc/PID/smaps there
# (broker.smaps, worker.smaps) for a per-mapping look.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$src/build}"
mode="${1:-periodic}"; shift || true
dir="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
: >"$dir/broker.out"; : >"$dir/worker.out"
"$build/broker/am2z-broker" --data-dir "$dir/data" --durability "$mode" --log-level warn ${BROKER_ARGS:-} \
  --frontend 'tcp://127.0.0.1:*' --backend 'tcp://127.0.0.1:*' --events 'tcp://127.0.0.1:*' >"$dir/broker.out" &
pids+=($!)
for _ in $(seq 100); do grep -q ready "$dir/broker.out" && break; sleep 0.1; done
line="$(grep ready "$dir/broker.out")"
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
"$build/examples/am2z-example-worker" --broker "$(field backend)" --log-level warn \
  --concurrency "${WORKER_CONCURRENCY:-0}" >"$dir/worker.out" &
pids+=($!)
for _ in $(seq 100); do grep -q ready "$dir/worker.out" && break; sleep 0.1; done
echo "durability=$mode cores=$(nproc) kernel=$(uname -r)"
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{printf "%d", ($14 + $15) * 1000 / hz}' "/proc/$1/stat"; }
# per thread of the broker (loop, am2z-writer, ZeroMQ's I/O thread), by name
threads_ms() { for t in /proc/"$1"/task/*; do printf '%s=%s ' "$(tr ' ' _ <"$t/comm")" "$(cpu_ms "${t#/proc/}")"; done; }
b0=$(cpu_ms "${pids[0]}") w0=$(cpu_ms "${pids[1]}") bt0=$(threads_ms "${pids[0]}")
# CPU is read as soon as the bench prints its first figure (a blocking
# read on a FIFO), before it tidies up (the throughput workload then stops
# its sessions).
mkfifo "$dir/bench.fifo"
stdbuf -oL "$build/bench/am2z-bench" --broker "$(field frontend)" "$@" >"$dir/bench.fifo" &
bench=$!
exec {fd}<"$dir/bench.fifo"
first=""; IFS= read -r first <&"$fd" || true
b1=$(cpu_ms "${pids[0]}") w1=$(cpu_ms "${pids[1]}") bt1=$(threads_ms "${pids[0]}")
[ -z "$first" ] || printf '%s\n' "$first"
cat <&"$fd"
exec {fd}<&-
rc=0; wait "$bench" || rc=$?
[ "$rc" -eq 0 ] || exit "$rc"
echo "cpu_ms broker=$(( b1 - b0 )) worker=$(( w1 - w0 ))"
# the broker's threads over the same window (name=ms; a name may repeat)
echo "cpu_ms_threads broker: $(paste -d' ' <(tr ' ' '\n' <<<"$bt0") <(tr ' ' '\n' <<<"$bt1") \
  | awk 'NF == 2 { split($1, a, "="); split($2, b, "="); printf "%s=%d ", a[1], b[2] - a[2] }')"
kb() { sed -n "s/^$2:[[:space:]]*\([0-9]*\).*/\1/p" "/proc/$1/status"; }
names=(broker worker)
for i in 0 1; do
  name=${names[$i]} p=${pids[$i]}
  echo "rss_kb $name hwm=$(kb "$p" VmHWM) anon=$(kb "$p" RssAnon) file=$(kb "$p" RssFile) threads=$(kb "$p" Threads)"
  if [ -n "${SMAPS_DIR:-}" ]; then mkdir -p "$SMAPS_DIR"; cp "/proc/$p/smaps" "$SMAPS_DIR/$name.smaps"; fi
done
