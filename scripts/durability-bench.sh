#!/usr/bin/env bash
# The durability benchmark (issue #12): PUT req/s and server CPU per request for corekv in
# memory and with --fsync never|everysec|always against Redis with appendonly yes
# (appendfsync everysec|always); recovery time for 1M keys; disk bytes per key against Redis's
# AOF and RDB. Pinned per shared/BENCHMARKING.md (server on CPU 1, load on CPU 0). Usage,
# after `cargo build --release`:
#
#   scripts/durability-bench.sh [--duration S] [--connections N] [--recovery-keys 10000000]
#
# Installs wrk and redis-server when it can (root, apt). Talks only to 127.0.0.1; every
# server it starts is stopped on exit or Ctrl-C. See scripts/durability_bench.py --help.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/need.sh
need wrk:wrk redis-server:redis-server redis-benchmark:redis-tools
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
if [[ -z "${COREKV_BIN:-}" && ! -x target/release/corekv ]]; then
  echo "building corekv (cargo build --release)" >&2
  cargo build --release --bin corekv >&2
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec python3 scripts/durability_bench.py "$@"
