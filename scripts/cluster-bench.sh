#!/usr/bin/env bash
# The replicated-cluster benchmark (issue #13): a 3-member etcd cluster on loopback (Debian's
# etcd-server, fsync on commit, v3 JSON gateway) and a 3-node corekv cluster (release build,
# --shards 1, a --data-dir each: its Raft log is fdatasynced before a write is answered), both
# driven by wrk with the same connections, keys and value size, interleaved in one run.
#
#   scripts/cluster-bench.sh [--quick] [--duration S] [--rounds N] [--connections 64]
#                            [--targets etcd,corekv] [--members 3] [--workloads put,get]
#                            [--server-cpus 1] [--client-cpu 0] [--entry leader|N]
#
# Results go to target/cluster-bench-results/<timestamp>/ (results.md, results.csv, wrk output,
# member logs). Installs etcd-server and wrk when missing (as root, via apt). Sends traffic only
# to 127.0.0.1; every process it starts is stopped on exit or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/need.sh
need wrk:wrk etcd:etcd-server
# The flags scripts/cluster.py passes exist since etcd 3.4 (--logger zap; the v3 JSON gateway
# at /v3/kv/*, not /v3beta or /v3alpha). Debian 12 ships 3.4.23.
version=$(etcd --version | sed -n 's/^etcd Version: //p')
case "$version" in
  3.[4-9].*|[4-9].*) ;;
  *) echo "etcd $version is too old: the harness needs 3.4 or later" >&2; exit 1 ;;
esac
if [[ -z "${COREKV_BIN:-}" ]]; then
  # Up to date, this is a no-op; otherwise the run measures the worktree's code, not an old build.
  echo "building corekv (cargo build --release)" >&2
  cargo build --release >&2
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec python3 scripts/cluster_bench.py "$@"
