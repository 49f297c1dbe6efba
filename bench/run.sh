#!/usr/bin/env bash
# bench/run.sh — the am2z benchmark harness (issue 7). One command:
#
#   bash bench/run.sh [--quick] [--runs N] [--no-peer] [--profile] [--out FILE]
#
# builds am2z-broker, am2z-example-worker, am2z-bench and zmq-floor, runs
# every workload against separate broker / worker / client processes on
# 127.0.0.1, the ZeroMQ floor and the BullMQ + Redis peer alternately
# (A B A B ...), and writes docs/benchmarks.md and docs/benchmarks.png.
#
#   --quick    fewer runs and jobs (development; figures not comparable)
#   --runs N   repetitions of every case (default 5; each figure is the
#              median of them, with min and max)
#   --no-peer  skip BullMQ (am2z and the floor only)
#   --profile  also run bench/profile.sh (perf on broker and worker during
#              the throughput workload; per-job syscalls, context switches)
#   --out F    the report (default docs/benchmarks.md; the chart goes next
#              to it with .png)
#
# Environment: BUILD_DIR (default ./build), WORKER_CONCURRENCY (default 100,
# the BullMQ worker's concurrency: both sides get the same number of slots),
# AM2Z_BENCH_NO_INSTALL=1 (never apt-get / npm install).
# Needs: cmake toolchain (deploy/install-deps.sh), python3; optional
# gnuplot (chart), redis-server + node/npm (peer), perf (--profile).
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$src/build}"
conc="${WORKER_CONCURRENCY:-100}"
mode=full runs=5 peer=1 profile=0 out="$src/docs/benchmarks.md"
while (($#)); do
  case "$1" in
    --quick) mode=quick; runs=3 ;;
    --runs) runs="$2"; shift ;;
    --no-peer) peer=0 ;;
    --profile) profile=1 ;;
    --out) out="$(realpath -m "$2")"; shift ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [[ $mode == full ]]; then
  ROUNDS=2000 JOBS=50000 CYCLES=1000 ROUNDS_FLOW=1000 ROUNDS_4K=2000 JOBS_4K=20000 ROUNDS_64K=500 JOBS_64K=5000
else
  ROUNDS=300 JOBS=5000 CYCLES=200 ROUNDS_FLOW=200 ROUNDS_4K=300 JOBS_4K=2000 ROUNDS_64K=100 JOBS_64K=500
fi
WINDOW=2000
log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# ---------------------------------------------------------------- build
log "building into $build"
cmake -S "$src" -B "$build" -DAM2Z_WERROR=ON >/dev/null
cmake --build "$build" -j"$(nproc)" --target am2z-broker am2z-example-worker am2z-bench zmq-floor >/dev/null
BROKER="$build/broker/am2z-broker" WORKER="$build/examples/am2z-example-worker"
BENCH="$build/bench/am2z-bench" FLOOR="$build/bench/zmq-floor"

work="$(mktemp -d /tmp/am2z-bench.XXXXXX)"
results="$work/results.jsonl"
: >"$results"
source "$src/bench/procs.sh"     # pids, stop_all, the EXIT trap
can_install() { [[ -z ${AM2Z_BENCH_NO_INSTALL:-} && $(id -u) == 0 ]] && command -v apt-get >/dev/null; }

# ---------------------------------------------------------------- optional tools
notes=()
if ! command -v gnuplot >/dev/null && can_install; then
  log "installing gnuplot-nox"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnuplot-nox >/dev/null 2>&1 || true
fi
command -v gnuplot >/dev/null || notes+=("gnuplot is not installed (apt-get install gnuplot-nox): no chart.")
if ((peer)); then
  if ! command -v redis-server >/dev/null && can_install; then
    log "installing redis-server"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null 2>&1 || true
  fi
  if ! command -v node >/dev/null && can_install; then
    log "installing nodejs + npm"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null 2>&1 || true
  fi
  peerdir="$src/bench/peers/bullmq"
  if ! command -v redis-server >/dev/null; then
    notes+=("BullMQ peer skipped: redis-server could not be installed.")
    peer=0
  elif ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    notes+=("BullMQ peer skipped: Node.js / npm could not be installed.")
    peer=0
  elif [[ ! -d $peerdir/node_modules/bullmq ]] \
       && ! (cd "$peerdir" && { npm ci --no-audit --no-fund >"$work/npm.log" 2>&1 \
                                || npm install --no-audit --no-fund >>"$work/npm.log" 2>&1; }); then
    # `ci` installs exactly the lock; the lock lists msgpackr-extract's
    # optional per-platform binaries, without which npm 11's `ci` refuses
    # it. `install` is the fallback for an npm that still does (it may add
    # entries to the lock; the versions stay the pinned ones).
    notes+=("BullMQ peer skipped: npm could not install bench/peers/bullmq ($(tail -1 "$work/npm.log")).")
    peer=0
  fi
  # the systemd unit of the Debian package is not ours to use: the harness
  # starts its own servers on free loopback ports
fi
((peer)) || log "BullMQ peer off: ${notes[*]:-(--no-peer)}"

# ---------------------------------------------------------------- helpers
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() {  # file pattern
  local _
  for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "run.sh: timed out waiting for '$2' in $1:" >&2; cat "$1" >&2; return 1
}
rss_kb() { sed -n "s/^$2:[[:space:]]*\([0-9]*\).*/\1/p" "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$1/status" 2>/dev/null || echo 0; }
# context switches (voluntary + involuntary) summed over the threads of a process
ctxsw() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {n += $2} END {print n + 0}'; }
# CPU time (user + system, all threads) of a process so far, in µs
cpu_us() { awk -v hz="$(getconf CLK_TCK)" '{printf "%d", ($14 + $15) * 1000000 / hz}' "/proc/$1/stat" 2>/dev/null || echo 0; }
record() {  # system config case run extra-json result-json
  printf '{"system":"%s","config":"%s","case":"%s","run":%s%s,"result":%s}\n' \
    "$1" "$2" "$3" "$4" "$5" "$6" >>"$results"
}

# am2z: a fresh broker (own data dir) + one worker per case, so VmHWM is the
# peak of that case alone.  am2z_case durability case-name run bench-args...
# Durability "pinned" is periodic with each process on one core: the broker
# on the first CPU, the worker and the client on the last (--cpus, taskset).
am2z_case() {
  local dur="$1" name="$2" run="$3"; shift 3
  local label="$dur" bpin=() wpin=() cpin=() wconc="$conc"
  if [[ $dur == *-c16 ]]; then   # the same with 16 worker slots (less memory)
    dur="${dur%-c16}" wconc=16
  fi
  if [[ $dur == pinned ]]; then
    dur=periodic bpin=(--cpus "$PIN_BROKER") wpin=(--cpus "$PIN_WORKER")
    cpin=(taskset -c "$PIN_CLIENT")
  fi
  local d="$work/am2z-$name-$label-$run"
  mkdir -p "$d"
  "$BROKER" --data-dir "$d/data" --durability "$dur" --log-level warn --map-size 8GiB \
    --frontend 'tcp://127.0.0.1:*' --backend 'tcp://127.0.0.1:*' --events 'tcp://127.0.0.1:*' \
    "${bpin[@]}" >"$d/broker.out" 2>&1 &
  local bp=$!; pids+=("$bp")
  wait_for "$d/broker.out" ready
  local line fe be
  line="$(grep ready "$d/broker.out")"
  fe="$(sed -n 's/.* frontend=\([^ ]*\).*/\1/p' <<<"$line")"
  be="$(sed -n 's/.* backend=\([^ ]*\).*/\1/p' <<<"$line")"
  "$WORKER" --broker "$be" --log-level warn --concurrency "$wconc" "${wpin[@]}" \
    >"$d/worker.out" 2>&1 &
  local wp=$!; pids+=("$wp")
  wait_for "$d/worker.out" ready
  local c0b c0w u0b u0w c1b c1w u1b u1w out cp
  c0b=$(ctxsw "$bp") c0w=$(ctxsw "$wp") u0b=$(cpu_us "$bp") u0w=$(cpu_us "$wp")
  # The bench prints its figure when the measured part ends, then tidies up
  # (the throughput case stops its 1,000 sessions: ≈ 20 % more broker CPU
  # in sync). CPU and context switches are read as soon as the figure's
  # line arrives (a blocking read on a FIFO: nothing polls meanwhile), so
  # they cover the measured part only.
  local fifo="$d/bench.fifo" first="" rest="" fd
  rm -f "$fifo"; mkfifo "$fifo"
  "${cpin[@]}" stdbuf -oL "$BENCH" --broker "$fe" --json "$@" >"$fifo" 2>"$d/bench.err" &
  cp=$!
  exec {fd}<"$fifo"
  IFS= read -r first <&"$fd" || true
  c1b=$(ctxsw "$bp") c1w=$(ctxsw "$wp") u1b=$(cpu_us "$bp") u1w=$(cpu_us "$wp")
  rest="$(cat <&"$fd")"
  exec {fd}<&-
  out="$first${rest:+$'\n'$rest}"
  if wait "$cp" && [ -n "$out" ]; then
    local extra
    extra=$(printf ',"cpu_until_figure":true,"rss_broker_kb":%s,"rss_worker_kb":%s,"ctxsw_broker":%s,"ctxsw_worker":%s,"cpu_broker_us":%s,"cpu_worker_us":%s' \
      "$(hwm_kb "$bp")" "$(hwm_kb "$wp")" "$(( c1b - c0b ))" "$(( c1w - c0w ))" \
      "$(( u1b - u0b ))" "$(( u1w - u0w ))")
    # what the peak is made of, at the end of the run: heap vs mapped files (LMDB)
    extra+=$(printf ',"anon_broker_kb":%s,"file_broker_kb":%s,"anon_worker_kb":%s,"file_worker_kb":%s,"threads_worker":%s' \
      "$(rss_kb "$bp" RssAnon)" "$(rss_kb "$bp" RssFile)" "$(rss_kb "$wp" RssAnon)" "$(rss_kb "$wp" RssFile)" \
      "$(rss_kb "$wp" Threads)")
    record am2z "$label" "$name" "$run" "$extra" "$out"
  else
    log "am2z $name $label run $run FAILED: $(tail -2 "$d/bench.err")"
    notes+=("am2z $name ($label) run $run failed ($(tail -2 "$d/bench.err" | tr '\n' ' ')); that figure is the median of the other runs.")
  fi
  stop_all
  rm -rf "$d/data"
}

# the ZeroMQ floor: one broker + worker per run, the client does every size
floor_run() {
  local run="$1" d="$work/floor-$1"
  mkdir -p "$d"
  "$FLOOR" broker >"$d/broker.out" 2>&1 &
  pids+=($!)
  wait_for "$d/broker.out" ready
  local line fe be
  line="$(grep ready "$d/broker.out")"
  fe="$(sed -n 's/.* frontend=\([^ ]*\).*/\1/p' <<<"$line")"
  be="$(sed -n 's/.* backend=\([^ ]*\).*/\1/p' <<<"$line")"
  "$FLOOR" worker --broker "$be" >"$d/worker.out" 2>&1 &
  pids+=($!)
  local spec bytes rounds msgs out
  for spec in "100 $ROUNDS $JOBS" "4096 $ROUNDS_4K $JOBS_4K" "65536 $ROUNDS_64K $JOBS_64K"; do
    read -r bytes rounds msgs <<<"$spec"
    local sfx=""; ((bytes == 4096)) && sfx=-4k; ((bytes == 65536)) && sfx=-64k
    out="$("$FLOOR" client --broker "$fe" --json --bytes "$bytes" --rounds "$rounds" \
      --messages "$msgs" --window "$WINDOW")"
    record floor none "rt$sfx" "$run" "" "$(sed -n 1p <<<"$out")"
    record floor none "tp$sfx" "$run" "" "$(sed -n 2p <<<"$out")"
  done
  stop_all
}

# the local (in-process) runtime: no broker, one process
local_run() {
  local run="$1" out line
  if out="$("$BENCH" --workload local --json --rounds "$ROUNDS" 2>"$work/local.err")"; then
    while read -r line; do
      record am2z local "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["workload"])' "$line")" \
        "$run" "" "$line"
    done <<<"$out"
  else
    log "am2z local run $run FAILED: $(tail -2 "$work/local.err")"
    notes+=("am2z local run $run failed ($(tail -2 "$work/local.err" | tr '\n' ' ')); that figure is the median of the other runs.")
  fi
  # the embedded runtime: broker + worker threads over inproc://, periodic
  if out="$("$BENCH" --workload embedded --json --rounds "$ROUNDS" 2>"$work/embedded.err")"; then
    record am2z embedded embedded "$run" "" "$out"
  else
    log "am2z embedded run $run FAILED: $(tail -2 "$work/embedded.err")"
    notes+=("am2z embedded run $run failed ($(tail -2 "$work/embedded.err" | tr '\n' ' ')); that figure is the median of the other runs.")
  fi
}

# BullMQ: a fresh Redis (free loopback port, own dir) + one node worker per case.
bull_case() {  # config(off|aof) case-name run client-args...
  local cfg="$1" name="$2" run="$3"; shift 3
  local d="$work/bull-$name-$cfg-$run" port
  mkdir -p "$d"
  port="$(free_port)"
  local persist=(--save '' --appendonly no)
  [[ $cfg == aof ]] && persist=(--save '' --appendonly yes --appendfsync everysec)
  redis-server --port "$port" --bind 127.0.0.1 --dir "$d" --daemonize no \
    --logfile "$d/redis.log" "${persist[@]}" &
  local rp=$!; pids+=("$rp")
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
  node "$peerdir/bench.js" worker --port "$port" --concurrency 100 >"$d/worker.out" 2>&1 &
  local wp=$!; pids+=("$wp")
  wait_for "$d/worker.out" ready
  local out
  if out="$(node "$peerdir/bench.js" client --port "$port" "$@" 2>"$d/client.err")"; then
    record bullmq "$cfg" "$name" "$run" \
      "$(printf ',"rss_broker_kb":%s,"rss_worker_kb":%s' "$(hwm_kb "$rp")" "$(hwm_kb "$wp")")" "$out"
  else
    log "BullMQ $name $cfg run $run FAILED: $(tail -2 "$d/client.err")"
    notes+=("BullMQ $name ($cfg) run $run failed ($(tail -2 "$d/client.err" | tr '\n' ' ')); that figure is the median of the other runs.")
  fi
  stop_all
  rm -rf "$d"
}

# ---------------------------------------------------------------- the runs
# placement for the "pinned" cases: the broker alone on the first CPU this
# process may use, worker and client on the last (needs two, and taskset)
read -r PIN_BROKER PIN_WORKER < <(python3 -c 'import os; c=sorted(os.sched_getaffinity(0)); print(c[0], c[-1])')
PIN_CLIENT=$PIN_WORKER
pin=0
if [[ $PIN_BROKER != "$PIN_WORKER" ]] && command -v taskset >/dev/null; then
  pin=1
else
  notes+=("One-core-per-process cases skipped: they need two CPUs and taskset (util-linux).")
fi
started="$(date -u '+%Y-%m-%d %H:%M UTC')"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
t0=$SECONDS
for run in $(seq "$runs"); do
  log "run $run/$runs ($mode)"
  # A B A B: every am2z case is followed by its BullMQ counterpart
  am2z_case periodic rt "$run" --workload rt --rounds "$ROUNDS"
  ((peer)) && bull_case off rt "$run" --workload rt --rounds "$ROUNDS"
  am2z_case sync rt "$run" --workload rt --rounds "$ROUNDS"
  ((peer)) && bull_case aof rt "$run" --workload rt --rounds "$ROUNDS"
  am2z_case periodic tp "$run" --workload tp --jobs "$JOBS" --window "$WINDOW"
  ((peer)) && bull_case off tp "$run" --workload tp --jobs "$JOBS" --window "$WINDOW"
  am2z_case sync tp "$run" --workload tp --jobs "$JOBS" --window "$WINDOW"
  ((peer)) && bull_case aof tp "$run" --workload tp --jobs "$JOBS" --window "$WINDOW"
  if ((conc != 16)); then   # memory vs throughput: the worker with 16 slots
    am2z_case periodic-c16 tp "$run" --workload tp --jobs "$JOBS" --window "$WINDOW"
    am2z_case sync-c16 tp "$run" --workload tp --jobs "$JOBS" --window "$WINDOW"
  fi
  am2z_case periodic chain3 "$run" --workload chain3 --rounds "$ROUNDS_FLOW"
  ((peer)) && bull_case aof chain3 "$run" --workload chain3 --rounds "$ROUNDS_FLOW"
  am2z_case periodic par3 "$run" --workload par3 --rounds "$ROUNDS_FLOW"
  ((peer)) && bull_case aof par3 "$run" --workload par3 --rounds "$ROUNDS_FLOW"
  am2z_case periodic session "$run" --workload session --cycles "$CYCLES"
  ((peer)) && bull_case off session "$run" --workload session --cycles "$CYCLES"
  am2z_case sync session "$run" --workload session --cycles "$CYCLES"
  ((peer)) && bull_case aof session "$run" --workload session --cycles "$CYCLES"
  floor_run "$run"
  local_run "$run"
  if ((pin)); then   # one core per process (latency tuning): the same workloads
    am2z_case pinned rt "$run" --workload rt --rounds "$ROUNDS"
    am2z_case pinned tp "$run" --workload tp --jobs "$JOBS" --window "$WINDOW"
    am2z_case pinned chain3 "$run" --workload chain3 --rounds "$ROUNDS_FLOW"
    am2z_case pinned par3 "$run" --workload par3 --rounds "$ROUNDS_FLOW"
    am2z_case pinned session "$run" --workload session --cycles "$CYCLES"
  fi
  am2z_case periodic rt-4k "$run" --workload rt --rounds "$ROUNDS_4K" --state-bytes 4096
  am2z_case periodic tp-4k "$run" --workload tp --jobs "$JOBS_4K" --window "$WINDOW" --state-bytes 4096
  am2z_case periodic rt-64k "$run" --workload rt --rounds "$ROUNDS_64K" --state-bytes 65536
  am2z_case periodic tp-64k "$run" --workload tp --jobs "$JOBS_64K" --window "$WINDOW" --state-bytes 65536
done
elapsed=$((SECONDS - t0))
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

profile_dir=""
if ((profile)); then
  profile_dir="$work/profile"
  BUILD_DIR="$build" WORKER_CONCURRENCY="$conc" bash "$src/bench/profile.sh" "$profile_dir" "$JOBS" \
    || log "profile failed (see above)"
  # keep the text reports (flat profiles, strace, callgrind) after $work goes
  mkdir -p "$build/bench-profile"
  cp "$profile_dir"/*.txt "$profile_dir"/*.json "$build/bench-profile/" 2>/dev/null || true
  log "profile reports kept in $build/bench-profile/"
fi

# ---------------------------------------------------------------- machine + report
meta="$work/meta.json"
ver() { "$@" 2>/dev/null | head -1 || true; }
python3 - "$meta" <<EOF
import json, sys
json.dump({
  "mode": "$mode", "runs": $runs, "started": "$started", "elapsed_s": $elapsed,
  "load_before": "$load_before", "load_after": "$load_after",
  "cpu": "$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -1)",
  "cores": "$(nproc)", "mem": "$(free -g | awk '/^Mem:/ {print $2 " GiB"}')",
  "kernel": "$(uname -sr)", "os": "$(. /etc/os-release && echo "$PRETTY_NAME")",
  "cc": "$(ver cc --version)",
  "libzmq": "$(pkg-config --modversion libzmq 2>/dev/null)",
  "czmq": "$(pkg-config --modversion libczmq 2>/dev/null)",
  "lmdb": "$(pkg-config --modversion lmdb 2>/dev/null)",
  "msgpack": "$(pkg-config --modversion msgpack 2>/dev/null)",
  "openssl": "$(pkg-config --modversion libcrypto 2>/dev/null)",
  "commit": "$(git -C "$src" rev-parse --short HEAD 2>/dev/null)",
  "node": "$( ((peer)) && node --version)",
  "redis": "$( ((peer)) && redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')",
  "bullmq": "$( ((peer)) && node -p "require('$peerdir/node_modules/bullmq/package.json').version")",
  "ioredis": "$( ((peer)) && node -p "require('$peerdir/node_modules/ioredis/package.json').version")",
  "worker_concurrency": $conc, "window": $WINDOW,
  "pin": {"broker": "$PIN_BROKER", "worker": "$PIN_WORKER", "client": "$PIN_CLIENT", "on": $pin},
  "sizes": {"rounds": $ROUNDS, "jobs": $JOBS, "cycles": $CYCLES, "rounds_flow": $ROUNDS_FLOW, "rounds_4k": $ROUNDS_4K,
            "jobs_4k": $JOBS_4K, "rounds_64k": $ROUNDS_64K, "jobs_64k": $JOBS_64K},
  "peer": $peer, "notes": $(python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "${notes[@]}"),
}, open(sys.argv[1], "w"), indent=1)
EOF
mkdir -p "$(dirname "$out")"
{ python3 -c 'import json,sys; print(json.dumps({"meta": json.load(open(sys.argv[1]))}))' "$meta"
  cat "$results"
  if [[ -n $profile_dir && -f $profile_dir/summary.json ]]; then
    python3 -c 'import json,sys; print(json.dumps({"profile": json.load(open(sys.argv[1]))}))' \
      "$profile_dir/summary.json"
  fi; } >"${out%.md}.jsonl"
python3 "$src/bench/report.py" --results "${out%.md}.jsonl" --out "$out" \
  --chart "${out%.md}.png" --notes "$src/bench/where-the-time-goes.md"
log "done in ${elapsed}s: $out"
