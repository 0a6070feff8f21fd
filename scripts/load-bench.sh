#!/usr/bin/env bash
# Measures `corekv serve --load` with 1 and 2 shards: time until the load finished, lines per
# second, keys served and RSS (see scripts/load_bench.py, which starts the servers through
# kvlib like every other script). Usage, after `cargo build --release`:
#
#   scripts/load-bench.sh [LINES]      (default 10,000,000 lines, ~770 MB, cached in target/load-bench/)
#
# Talks only to 127.0.0.1 and stops every server it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${COREKV_BIN:-}" && ! -x target/release/corekv ]]; then
  echo "building corekv (cargo build --release)" >&2
  cargo build --release --bin corekv >&2
fi
exec python3 scripts/load_bench.py "$@"
