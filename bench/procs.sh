# bench/procs.sh — sourced by the bench scripts (run.sh, profile.sh,
# instructions.sh): the processes a script starts, and stopping them.
# A script appends each PID it starts to `pids`; stop_all sends them
# SIGTERM, waits for each, and empties the list. `work` is the script's
# scratch directory, removed on exit with everything still running stopped.
# Stops in reverse order of start (a worker before its broker or Redis: a
# BullMQ worker whose Redis is already gone waits for it forever in its
# SIGTERM handler), each within STOP_WAIT_S seconds, then SIGKILL.
STOP_WAIT_S=${STOP_WAIT_S:-10}
pids=()
# running (an exited child stays a zombie until waited for: not running)
running() {
  local st
  st="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
  [[ -n $st && $st != Z ]]
}
stop_all() {
  local i p t
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    p=${pids[$i]}
    kill -TERM "$p" 2>/dev/null || continue
    for ((t = 0; t < STOP_WAIT_S * 20; t++)); do
      running "$p" || break
      sleep 0.05
    done
    if running "$p"; then
      echo "bench: pid $p did not stop within ${STOP_WAIT_S}s of SIGTERM: SIGKILL" >&2
      kill -KILL "$p" 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
  done
  pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT
