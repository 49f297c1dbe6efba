#!/usr/bin/env bash
# bench/profile.sh — where the time goes in the throughput workload.
#
#   bash bench/profile.sh [OUT_DIR] [JOBS] [DURABILITY]
#
# Starts am2z-broker + am2z-example-worker (as bench/run.sh does), and while
# am2z-bench pipelines JOBS jobs (default 50000, durability periodic):
#   - perf stat on each process: task-clock, context switches, syscalls
#     -> OUT_DIR/summary.json (per job; bench/report.py prints it);
#   - perf record -g (cpu-clock: this VM has no hardware PMU) on each
#     -> OUT_DIR/{broker,worker}.data and *-top.txt (flat and by DSO);
#   - strace -c -f on each in a second, shorter pass (syscall mix)
#     -> OUT_DIR/{broker,worker}-strace.txt;
#   - with CALLGRIND=1, the broker under callgrind for JOBS/10 jobs
#     -> OUT_DIR/broker-callgrind.txt (instruction counts per function).
# Needs perf (linux-perf); strace and valgrind optional. Run as root or
# with kernel.perf_event_paranoid <= 1.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$src/build}"
out="$(realpath -m "${1:-$build/bench-profile}")"
jobs="${2:-50000}"
dur="${3:-periodic}"
conc="${WORKER_CONCURRENCY:-100}"
mkdir -p "$out"
work="$(mktemp -d /tmp/am2z-prof.XXXXXX)"
source "$src/bench/procs.sh"     # pids, stop_all, the EXIT trap
command -v perf >/dev/null || { echo "profile.sh: perf not installed (apt-get install linux-perf)" >&2; exit 1; }

# start BROKER_WRAPPER... ; sets bp wp fe
start() {
  rm -rf "$work/data"
  "$@" "$build/broker/am2z-broker" --data-dir "$work/data" --durability "$dur" --log-level warn \
    --map-size 8GiB --frontend 'tcp://127.0.0.1:*' --backend 'tcp://127.0.0.1:*' \
    --events 'tcp://127.0.0.1:*' >"$work/broker.out" 2>&1 &
  bp=$!; pids+=("$bp")
  for _ in $(seq 600); do grep -q ready "$work/broker.out" && break; sleep 0.1; done
  local line be
  line="$(grep ready "$work/broker.out")"
  fe="$(sed -n 's/.* frontend=\([^ ]*\).*/\1/p' <<<"$line")"
  be="$(sed -n 's/.* backend=\([^ ]*\).*/\1/p' <<<"$line")"
  "$build/examples/am2z-example-worker" --broker "$be" --log-level warn --concurrency "$conc" \
    >"$work/worker.out" 2>&1 &
  wp=$!; pids+=("$wp")
  for _ in $(seq 600); do grep -q ready "$work/worker.out" && break; sleep 0.1; done
}

# --- pass 1: perf stat + perf record
start
warm() { "$build/bench/am2z-bench" --broker "$fe" --workload tp --jobs 2000 --json >/dev/null; }
warm
perf stat -x, -o "$work/broker.stat" -e task-clock,context-switches,raw_syscalls:sys_enter -p "$bp" &
ps1=$!
perf stat -x, -o "$work/worker.stat" -e task-clock,context-switches,raw_syscalls:sys_enter -p "$wp" &
ps2=$!
perf record -q -g -F 999 -p "$bp" -o "$out/broker.data" 2>/dev/null &
pr1=$!
perf record -q -g -F 999 -p "$wp" -o "$out/worker.data" 2>/dev/null &
pr2=$!
sleep 0.5
perf stat -x, -o "$work/client.stat" -e task-clock,context-switches,raw_syscalls:sys_enter -- \
  "$build/bench/am2z-bench" --broker "$fe" --workload tp --jobs "$jobs" --json | tee "$out/bench.json"
kill -INT $ps1 $ps2 $pr1 $pr2
wait $ps1 $ps2 $pr1 $pr2 2>/dev/null || true
stop_all
for who in broker worker; do
  perf report -i "$out/$who.data" --stdio --no-children --sort symbol --percent-limit 0.7 \
    2>/dev/null | grep -v '^$' | grep -E '^ +[0-9]' >"$out/$who-top.txt" || true
  perf report -i "$out/$who.data" --stdio --no-children --sort dso 2>/dev/null \
    | grep -E '^ +[0-9]' >"$out/$who-dso.txt" || true
  perf report -i "$out/$who.data" --stdio --children --sort symbol --percent-limit 3 -g none \
    2>/dev/null | grep -E '^ +[0-9]' >"$out/$who-children.txt" || true
done
python3 - "$work" "$out" "$jobs" "$dur" <<'EOF'
import json, sys
work, out, jobs, dur = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
res = {"jobs": jobs, "durability": dur}
res["bench"] = json.load(open(f"{out}/bench.json"))
for who in ("broker", "worker", "client"):
    v = {}
    for line in open(f"{work}/{who}.stat"):
        f = line.strip().split(",")
        if len(f) < 3 or not f[0] or f[0].startswith("<"):
            continue
        try:
            val = float(f[0])
        except ValueError:
            continue
        ev = f[2]
        if ev.startswith("task-clock"):
            v["cpu_us"] = val * 1000 / jobs          # msec -> µs per job
        elif ev.startswith("context-switches"):
            v["ctxsw"] = val / jobs
        elif ev.startswith("raw_syscalls"):
            v["syscalls"] = val / jobs
    res[who] = v
json.dump(res, open(f"{out}/summary.json", "w"), indent=1)
print(json.dumps(res))
EOF

# --- pass 2: syscall mix (strace slows everything: fewer jobs)
if command -v strace >/dev/null; then
  start
  warm
  strace -c -f -p "$bp" -o "$out/broker-strace.txt" 2>/dev/null &
  st1=$!
  strace -c -f -p "$wp" -o "$out/worker-strace.txt" 2>/dev/null &
  st2=$!
  sleep 0.5
  "$build/bench/am2z-bench" --broker "$fe" --workload tp --jobs $((jobs / 5)) --json >"$out/strace-bench.json"
  kill -INT $st1 $st2
  wait $st1 $st2 2>/dev/null || true
  stop_all
fi

# --- pass 3: instruction counts of the broker
if [[ ${CALLGRIND:-0} == 1 ]] && command -v valgrind >/dev/null; then
  start valgrind --tool=callgrind --callgrind-out-file="$out/broker.callgrind" -q
  "$build/bench/am2z-bench" --broker "$fe" --workload tp --jobs $((jobs / 10)) --json >"$out/callgrind-bench.json"
  stop_all
  callgrind_annotate --inclusive=no "$out/broker.callgrind" 2>/dev/null | head -60 >"$out/broker-callgrind.txt" || true
  callgrind_annotate --inclusive=yes "$out/broker.callgrind" 2>/dev/null | head -60 >"$out/broker-callgrind-incl.txt" || true
fi
echo "profile.sh: results in $out" >&2
