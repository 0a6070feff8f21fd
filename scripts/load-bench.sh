#!/usr/bin/env bash
# Measures `corekv serve --load`: generates a file of LINES `<key> <value>` lines (default
# 10,000,000: 11-byte keys, 64-byte values, ~770 MB; cached under target/load-bench/), starts
# the release binary with 1 and with 2 shards, and reports the time until the load finished and
# lines per second, as the server logs them. Stops every server it starts.
#
# Usage: scripts/load-bench.sh [LINES]
set -euo pipefail
cd "$(dirname "$0")/.."

lines="${1:-10000000}"
bin="${COREKV_BIN:-target/release/corekv}"
dir=target/load-bench
file="$dir/data-$lines.txt"
mkdir -p "$dir"
[[ -x "$bin" ]] || cargo build --release --bin corekv

if [[ ! -s "$file" ]]; then
    echo "generating $file ($lines lines)"
    awk -v n="$lines" 'BEGIN {
        value = "v-0123456789abcdefghijklmnopqrstuvwxyz-0123456789abcdefghijklmn";
        for (i = 0; i < n; i++) printf "key:%07d %s\n", i, value
    }' >"$file.tmp"
    mv "$file.tmp" "$file"
fi
bytes=$(stat -c %s "$file")

server_pid=""
trap '[[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null; true' EXIT

printf '\n| shards | lines | MiB | seconds | lines/s | keys served | RSS after |\n|---:|---:|---:|---:|---:|---:|---:|\n'
for shards in 1 2; do
    log="$dir/serve-$shards.log"
    # Drop the page cache's advantage for the first run only as far as we can: read it once.
    cat "$file" >/dev/null
    RUST_LOG=info "$bin" serve --addr 127.0.0.1:0 --shards "$shards" --load "$file" 2>"$log" &
    server_pid=$!
    for _ in $(seq 1 1200); do
        grep -q "listening on" "$log" && break
        kill -0 "$server_pid" 2>/dev/null || { cat "$log"; exit 1; }
        sleep 0.5
    done
    addr=$(grep -o 'listening on http://[^ ]*' "$log" | head -1 | sed 's|listening on http://||')
    summary=$(grep -o 'loaded [0-9]* lines .* in [0-9.]* s: [0-9]* lines/s' "$log" | head -1)
    seconds=$(sed -E 's/.* in ([0-9.]+) s.*/\1/' <<<"$summary")
    rate=$(sed -E 's/.*: ([0-9]+) lines\/s/\1/' <<<"$summary")
    keys=$(curl -s "http://$addr/v1/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["keys"])')
    rss=$(awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' "/proc/$server_pid/status")
    printf '| %s | %s | %.0f | %s | %s | %s | %s |\n' "$shards" "$lines" "$(awk -v b="$bytes" 'BEGIN { print b / 1048576 }')" \
        "$seconds" "$rate" "$keys" "$rss"
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
    server_pid=""
done
echo
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
