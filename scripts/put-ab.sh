#!/usr/bin/env bash
# A/B of the PUT path, memory-only or logged: one corekv binary, one mode, one 5 s wrk run,
# printing PUT/s, user and system CPU µs per request and context switches per request (the
# figures behind docs/BENCHMARKS.md "The logged write path"). Server pinned to CPU 1 and wrk
# to CPU 0 (shared/BENCHMARKS.md), both at nice -19 so other work on the machine disturbs
# them less. Talks only to 127.0.0.1; the server is stopped at the end.
#
#   scripts/put-ab.sh BINARY memory|never|everysec|always [perf]
#
# With `perf`, also records `perf record -e cpu-clock -g` of the server for 4 s into
# $WORK/perf.data (WORK defaults to target/put-ab).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "$1"); MODE=$2; PERF=${3:-}
WORK=${WORK:-target/put-ab}; PORT=${PORT:-18080}
source scripts/need.sh
need wrk:wrk curl:curl
[[ -n "$PERF" ]] && need perf:linux-perf
rm -rf "$WORK"; mkdir -p "$WORK"
ARGS=(serve --addr "127.0.0.1:$PORT" --shards 1 --cpus 1)
[[ "$MODE" != memory ]] && ARGS+=(--data-dir "$WORK/data" --fsync "$MODE")
nice -n -19 taskset -c 1 "$BIN" "${ARGS[@]}" >"$WORK/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fs -o /dev/null "127.0.0.1:$PORT/v1/readiness" && break; sleep 0.1; done
ticks() { awk "{print \$$1}" "/proc/$PID/stat"; }
U0=$(ticks 14); S0=$(ticks 15)
perf stat -e context-switches -p "$PID" -o "$WORK/stat.txt" -- sleep 4 >/dev/null 2>&1 &
STAT=$!
[[ -n "$PERF" ]] && perf record -e cpu-clock -F 4999 -g -p "$PID" -o "$WORK/perf.data" -- sleep 4 >/dev/null 2>&1 &
nice -n -19 taskset -c 0 wrk -t1 -c64 -d5s -s "$PWD/scripts/wrk/put.lua" "http://127.0.0.1:$PORT" >"$WORK/wrk.txt"
U1=$(ticks 14); S1=$(ticks 15)
wait $STAT
REQ=$(sed -n 's/^WRK_RESULT requests=\([0-9]*\).*/\1/p' "$WORK/wrk.txt")
CS=$(awk '/context-switches/ {gsub(",", "", $1); print $1}' "$WORK/stat.txt")
HZ=$(getconf CLK_TCK)
python3 - "$MODE" "$REQ" "$U0" "$U1" "$S0" "$S1" "$CS" "$HZ" <<'PY'
import sys
mode, req, u0, u1, s0, s1, cs, hz = sys.argv[1], *map(int, sys.argv[2:])
us = 1e6 / hz / req
print(f"{mode}: {req / 5:,.0f} PUT/s, user {(u1 - u0) * us:.2f} + system {(s1 - s0) * us:.2f} µs/req, "
      f"{cs / (req * 0.8):.3f} context switches/req (perf stat over 4 of the 5 s)")
PY
kill $PID; wait $PID 2>/dev/null || true
