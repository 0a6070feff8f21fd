-- Shared by the corekv wrk scripts: the keyspace, request builders and the result line that
-- scripts/bench.py reads. Configured by environment variables so one script serves every run:
--   KEYS (default 10000)       keys key:0000000 .. key:<KEYS-1>, 11 bytes each
--   VALUE_BYTES (default 64)   size of every PUT body
--   PIPELINE (default 16)      requests per write in the pipelined script
-- Requests are built once in init() so that wrk (one CPU) spends its time on the socket, not
-- in Lua.
local M = {}

M.keys = tonumber(os.getenv("KEYS") or "10000")
M.value_bytes = tonumber(os.getenv("VALUE_BYTES") or "64")
M.depth = tonumber(os.getenv("PIPELINE") or "16")

function M.path(i)
  return string.format("/v1/keys/key:%07d", i)
end

function M.seed()
  -- Each wrk thread has its own Lua state; give each its own sequence.
  math.randomseed(os.time() + math.floor(os.clock() * 1e6) + (M.thread_id or 0))
end

function M.gets()
  local requests = {}
  for i = 0, M.keys - 1 do
    requests[i + 1] = wrk.format("GET", M.path(i))
  end
  return requests
end

function M.puts()
  local body = string.rep("v", M.value_bytes)
  local requests = {}
  for i = 0, M.keys - 1 do
    requests[i + 1] = wrk.format("PUT", M.path(i), nil, body)
  end
  return requests
end

-- One line wrk prints at the end; bench.py parses it. Latency is in microseconds, as wrk's
-- --latency report gives it. With pipelining wrk times a whole pipelined batch, and its
-- coordinated-omission correction (whose interval it computes per response, 16 times too short)
-- can leave the high percentiles at 0: bench.py reports those as missing.
function M.report(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d status_errors=%d " ..
    "connect_errors=%d read_errors=%d write_errors=%d timeouts=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout))
end

return M
