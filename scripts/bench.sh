#!/usr/bin/env bash
# The wrk benchmark: corekv's designs against axum+tokio+RwLock<HashMap>, nginx's fixed reply
# and Redis, in one
# interleaved run. Usage (after `cargo build --release`):
#
#   scripts/bench.sh [--quick] [--duration S] [--rounds N] [--connections 1,8,64,512]
#                    [--server-cpu 1] [--client-cpu 0] [--profile sharded:get:64,...]
#
# Every flag also reads from an environment variable (BENCH_DURATION, BENCH_ROUNDS, ...); see
# `scripts/bench.sh --help`. Results go to target/bench-results/<timestamp>/ (results.md,
# results.csv, chart.png). Installs wrk, nginx-light and redis-server when it can (as root, via
# apt) and skips the references it cannot install. Sends traffic only to 127.0.0.1; every
# server it starts is stopped on exit or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/need.sh
need wrk:wrk nginx:nginx-light redis-server:redis-server redis-benchmark:redis-tools
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
if [[ " $* " == *" --profile "* || -n "${BENCH_PROFILE:-}" ]] && ! command -v perf >/dev/null; then
  { apt-get install -y -qq linux-perf >&2; } || echo "note: perf unavailable; no profiles" >&2
fi
python3 -c 'import matplotlib' 2>/dev/null \
  || pip install -q matplotlib >&2 \
  || echo "note: matplotlib unavailable; no chart" >&2

if [[ -z "${COREKV_BIN:-}" && ! -x target/release/corekv ]]; then
  echo "building corekv (cargo build --release)" >&2
  cargo build --release >&2
fi

# The lock-based Rust contender, a separate crate so its dependencies stay out of corekv's.
if command -v cargo >/dev/null && [[ ! -x scripts/axum-contender/target/release/axum-contender ]]; then
  echo "building the axum contender (scripts/axum-contender)" >&2
  cargo build --release --quiet --manifest-path scripts/axum-contender/Cargo.toml >&2 \
    || echo "note: the axum contender did not build; it is skipped" >&2
fi

# 1,000 connections need that many sockets on each side.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec python3 scripts/bench.py "$@"
