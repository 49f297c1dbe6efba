#!/usr/bin/env bash
# bench/instructions.sh — instructions per job, counted by callgrind.
#
#   bash bench/instructions.sh [JOBS] [DURABILITY]
#
# Runs am2z-broker, am2z-example-worker (100 slots) and am2z-bench (the
# client, pipelining JOBS jobs, default 5000) each under valgrind
# --tool=callgrind, then does the same with one job, and prints the
# user-space instructions (Ir) each process spent per job:
# (Ir(JOBS) - Ir(1)) / (JOBS - 1). The client's figure includes its
# workload's closing stop_session calls (one per 5 jobs).
# Wall-clock figures on a shared VM move by ±15 % from run to run; these
# counts move by about 1 %, so they tell whether a change to the code does
# less work. They leave out the kernel, cache misses and waiting, and
# valgrind runs SHA-256 without the CPU's SHA extensions, so libcrypto
# weighs several times what it does natively (bench/where-the-time-goes.md).
# The broker's poll spin is off (it would count the spin's polls).
# Profiles stay in OUT_DIR (default build/bench-instructions):
# callgrind_annotate OUT_DIR/broker.callgrind | head -60
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$src/build}"
jobs="${1:-5000}"
dur="${2:-periodic}"
out="$(realpath -m "${OUT_DIR:-$build/bench-instructions}")"
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind not installed" >&2; exit 1; }
[[ "$jobs" =~ ^[0-9]+$ && "$jobs" -ge 2 ]] || { echo "instructions.sh: JOBS must be a number >= 2" >&2; exit 2; }
mkdir -p "$out"
work="$(mktemp -d /tmp/am2z-instr.XXXXXX)"
source "$src/bench/procs.sh"     # pids, stop_all, the EXIT trap
vg=(valgrind --tool=callgrind -q --dump-instr=no)

# run N TAG: one broker + worker pair under callgrind, N jobs
run() {
  local n=$1 tag=$2 line fe be
  rm -rf "$work/data"
  AM2Z_POLL_SPIN=0 "${vg[@]}" --callgrind-out-file="$out/broker$tag.callgrind" \
    "$build/broker/am2z-broker" --data-dir "$work/data" --durability "$dur" --log-level warn \
    --frontend 'tcp://127.0.0.1:*' --backend 'tcp://127.0.0.1:*' --events 'tcp://127.0.0.1:*' \
    >"$work/broker.out" 2>&1 &
  pids+=($!)
  for _ in $(seq 600); do grep -q ready "$work/broker.out" && break; sleep 0.1; done
  line="$(grep ready "$work/broker.out")" || { cat "$work/broker.out" >&2; exit 1; }
  fe="$(sed -n 's/.* frontend=\([^ ]*\).*/\1/p' <<<"$line")"
  be="$(sed -n 's/.* backend=\([^ ]*\).*/\1/p' <<<"$line")"
  "${vg[@]}" --callgrind-out-file="$out/worker$tag.callgrind" \
    "$build/examples/am2z-example-worker" --broker "$be" --log-level warn --concurrency 100 \
    >"$work/worker.out" 2>&1 &
  pids+=($!)
  # the bench refuses jobs for a processor the broker does not know yet
  for _ in $(seq 300); do
    "$build/client/am2z" --broker "$fe" processors 2>/dev/null | grep -q increment && break
    sleep 0.2
  done
  "${vg[@]}" --callgrind-out-file="$out/client$tag.callgrind" \
    "$build/bench/am2z-bench" --broker "$fe" --workload tp --jobs "$n" >"$work/bench.out" 2>&1 \
    || { cat "$work/bench.out" "$work/broker.out" "$work/worker.out" >&2; exit 1; }
  stop_all
}
total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done { gsub(",", "", $1); print $1; done = 1 }'; }

run 1 .one
run "$jobs" ""
echo "durability=$dur jobs=$jobs (callgrind, user-space instructions per job)"
for p in broker worker client; do
  a=$(total "$out/$p.callgrind"); b=$(total "$out/$p.one.callgrind")
  echo "$p Ir_per_job=$(( (a - b) / (jobs - 1) )) total=$a one_job=$b"
done
