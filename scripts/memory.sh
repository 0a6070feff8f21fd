#!/usr/bin/env bash
# Resident memory of 1,000,000 keys (11-byte keys, 64-byte values): corekv with 1 and 2 shards
# against Redis (no persistence). Usage, after `cargo build --release`:
#
#   scripts/memory.sh [--keys N] [--value-bytes N] [--cpus LIST] [--out DIR]
#
# Installs redis-server when it can (as root, via apt); without it, prints corekv's numbers
# alone. Talks only to 127.0.0.1 and stops every server it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; } >&2 \
      || echo "note: could not install redis-server; no comparison" >&2
  fi
fi
if [[ -z "${COREKV_BIN:-}" && ! -x target/release/corekv ]]; then
  echo "building corekv (cargo build --release)" >&2
  cargo build --release >&2
fi
exec python3 scripts/memory.py "$@"
