#!/usr/bin/env bash
# soak.sh — am2z soak test: jobs run continuously while workers are killed.
#
# Not part of ctest (it runs for minutes). Build first, then run:
#
#     cmake -S . -B build && cmake --build build -j
#     tests/soak.sh                       # 1 minute, 3 workers
#     tests/soak.sh --minutes 10 --workers 4 --kill-every 300
#
# Options:
#   --minutes M      how long the client submits jobs (default 1)
#   --workers N      workers kept running (default 3)
#   --kill-every MS  a random worker is SIGKILLed and replaced every MS
#                    milliseconds, +/- 50% (default 300)
#   --build DIR      the CMake build directory (default: build, next to tests/)
#   --keep           keep the scratch directory (logs, LMDB) afterwards
#
# What it does: starts am2z-broker on ephemeral ports (heartbeat 100 ms,
# liveness 3) and N am2z-example-workers, then runs am2z-soak
# (tests/soak_driver.c), which submits `increment` jobs in pipelined
# batches over 32 fresh sessions for the given time and collects every
# result. Meanwhile this script SIGKILLs a random worker every few hundred
# ms and starts a replacement.
#
# At the end it checks, from the driver's log of accepted jobs ("A id") and
# results ("R id ok attempt version"):
#   - the number of results equals the number of accepted jobs,
#   - no job id has two results, every accepted job has one,
# and the driver itself checks that every session's stored state moved by
# exactly its number of jobs (exactly-once). Prints one summary line:
#
#     soak PASS minutes=1 accepted=N results=N duplicates=0 missing=0 kills=K ...
#
# and exits 0 on PASS, 1 on FAIL, 2 on bad usage or a missing binary.
set -u

minutes=1
workers=3
kill_every=300
keep=0
here="$(cd "$(dirname "$0")" && pwd)"
build="$here/../build"

while [ $# -gt 0 ]; do
    case "$1" in
        --minutes)    minutes="$2"; shift 2 ;;
        --workers)    workers="$2"; shift 2 ;;
        --kill-every) kill_every="$2"; shift 2 ;;
        --build)      build="$2"; shift 2 ;;
        --keep)       keep=1; shift ;;
        -h|--help)    sed -n '2,38p' "$0"; exit 0 ;;
        *) echo "soak.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$minutes$workers$kill_every" in
    *[!0-9]*) echo "soak.sh: --minutes, --workers, --kill-every take whole numbers" >&2; exit 2 ;;
esac
[ "$minutes" -ge 1 ] && [ "$workers" -ge 1 ] && [ "$kill_every" -ge 10 ] || {
    echo "soak.sh: --minutes >= 1, --workers >= 1, --kill-every >= 10" >&2; exit 2; }

broker_bin="$build/broker/am2z-broker"
worker_bin="$build/examples/am2z-example-worker"
soak_bin="$build/tests/am2z-soak"
for b in "$broker_bin" "$worker_bin" "$soak_bin"; do
    [ -x "$b" ] || { echo "soak.sh: $b not found (build first; see the top of $0)" >&2; exit 2; }
done

dir="$(mktemp -d "${TMPDIR:-/tmp}/am2z-soak.XXXXXX")"
declare -a wpid
broker_pid=""
driver_pid=""

cleanup() {
    {
        for p in "${wpid[@]}" $driver_pid $broker_pid; do
            [ -n "$p" ] && kill -KILL "$p"
        done
        wait
    } 2>/dev/null
    if [ "$keep" = 1 ]; then echo "soak.sh: kept $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# Waits (bounded, 10 s) for a line matching $2 in file $1.
wait_line() {
    for _ in $(seq 1 1000); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.01
    done
    return 1
}

"$broker_bin" --data-dir "$dir/data" --frontend 'tcp://127.0.0.1:*' \
    --backend 'tcp://127.0.0.1:*' --events '' --heartbeat 100ms --liveness 3 \
    --durability periodic --log-level error >"$dir/broker.out" 2>"$dir/broker.err" &
broker_pid=$!
wait_line "$dir/broker.out" "ready" || { echo "soak.sh: broker did not start" >&2; cat "$dir/broker.err" >&2; exit 1; }
line="$(grep ready "$dir/broker.out")"
frontend="$(echo "$line" | sed -n 's/.*frontend=\([^ ]*\).*/\1/p')"
backend="$(echo "$line" | sed -n 's/.*backend=\([^ ]*\).*/\1/p')"

seq_no=0
start_worker() {   # $1 = slot
    seq_no=$((seq_no + 1))
    "$worker_bin" --broker "$backend" --id "soak-w$seq_no" --heartbeat 100ms \
        --liveness 3 --concurrency 4 --log-level error \
        >"$dir/worker-$seq_no.out" 2>>"$dir/workers.err" &
    wpid[$1]=$!
}
for i in $(seq 0 $((workers - 1))); do start_worker "$i"; done

"$soak_bin" --frontend "$frontend" --seconds $((minutes * 60)) \
    --log "$dir/jobs.log" >"$dir/driver.out" 2>"$dir/driver.err" &
driver_pid=$!

kills=0
while kill -0 "$driver_pid" 2>/dev/null; do
    ms=$((kill_every / 2 + RANDOM % (kill_every + 1)))
    sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
    kill -0 "$driver_pid" 2>/dev/null || break
    # only while jobs are being submitted: the final collection needs workers
    slot=$((RANDOM % workers))
    kill -KILL "${wpid[$slot]}" 2>/dev/null && wait "${wpid[$slot]}" 2>/dev/null
    kills=$((kills + 1))
    start_worker "$slot"
done
wait "$driver_pid"
driver_rc=$?
driver_pid=""

accepted=$(grep -c '^A ' "$dir/jobs.log")
results=$(grep -c '^R ' "$dir/jobs.log")
duplicates=$(grep '^R ' "$dir/jobs.log" | awk '{print $2}' | sort | uniq -d | wc -l)
missing=$(comm -23 <(grep '^A ' "$dir/jobs.log" | awk '{print $2}' | sort -u) \
                   <(grep '^R ' "$dir/jobs.log" | awk '{print $2}' | sort -u) | wc -l)
failed=$(grep '^R ' "$dir/jobs.log" | awk '$3 != 1' | wc -l)
retried=$(grep '^R ' "$dir/jobs.log" | awk '$4 > 1' | wc -l)

verdict=PASS
if [ "$driver_rc" != 0 ] || [ "$accepted" != "$results" ] || [ "$duplicates" != 0 ] \
   || [ "$missing" != 0 ] || [ "$failed" != 0 ] || [ "$accepted" = 0 ]; then
    verdict=FAIL
fi
echo "soak $verdict minutes=$minutes workers=$workers accepted=$accepted results=$results" \
     "duplicates=$duplicates missing=$missing failed=$failed retried=$retried kills=$kills" \
     "driver: $(cat "$dir/driver.out")"
if [ "$verdict" = FAIL ]; then
    echo "--- driver stderr (tail) ---" >&2
    tail -20 "$dir/driver.err" >&2
    keep=1
    exit 1
fi
exit 0
