# bench/procs.sh — sourced by the bench scripts (run.sh, profile.sh,
# instructions.sh): the processes a script starts, and stopping them.
# A script appends each PID it starts to `pids`; stop_all sends them
# SIGTERM, waits for each, and empties the list. `work` is the script's
# scratch directory, removed on exit with everything still running stopped.
pids=()
stop_all() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT
