#!/usr/bin/env bash
# Fuzzes a live corekv (2 shards, on a free port) against docs/openapi.yaml with schemathesis
# (a fuzzer nobody on this project wrote): every response must conform to the document (status,
# content type, schema, headers) and no input may give a 5xx or hang past --request-timeout.
# Bounded for CI: MAX_EXAMPLES cases per operation (default 20) and MAX_TIME_S seconds in all
# (default 45). A longer run: MAX_EXAMPLES=500 MAX_TIME_S=1800 scripts/schemathesis.sh
# COREKV_BIN picks the binary (default: target/debug/corekv, built when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

max_examples=${MAX_EXAMPLES:-20}
max_time_s=${MAX_TIME_S:-45}
bin=${COREKV_BIN:-target/debug/corekv}
command -v schemathesis >/dev/null || { echo "schemathesis is required: pip install schemathesis==4.32.5"; exit 1; }
[ -x "$bin" ] || cargo build --quiet

work=$(mktemp -d)
log="$work/server.log"
RUST_LOG=warn,corekv::server=info "$bin" serve --addr 127.0.0.1:0 --shards 2 \
    --max-keys 100000 --max-memory 256MiB 2>"$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

url=""
for _ in $(seq 1 400); do
    url=$(grep -o 'listening on http://[^ ]*' "$log" | head -n1 | sed 's/^listening on //') || true
    [ -n "$url" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "corekv exited"; exit 1; }
    sleep 0.05
done
[ -n "$url" ] || { cat "$log"; echo "corekv did not start listening"; exit 1; }
for _ in $(seq 1 200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/v1/readiness")" = 200 ] && break
    sleep 0.05
done
echo "fuzzing $url: $max_examples examples per operation, at most $max_time_s s"

# The wall-clock bound is schemathesis's own (--max-time) plus a margin, so a hang cannot stall CI.
status=0
timeout --kill-after=10 $((max_time_s + 60)) schemathesis run docs/openapi.yaml \
    --url "$url" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
    --max-examples "$max_examples" \
    --max-time "$max_time_s" \
    --request-timeout 5 \
    --workers 2 \
    --generation-database none \
    --no-color \
    --report junit --report-dir "$work/report" || status=$?
if ! kill -0 "$pid" 2>/dev/null; then
    echo "corekv died during the run; its log:"; cat "$log"; exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "schemathesis failed (exit $status); server log:"; tail -n 50 "$log"
fi
exit "$status"
