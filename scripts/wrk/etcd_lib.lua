-- Shared by the etcd wrk scripts: request bodies for etcd's v3 JSON gateway, whose keys and
-- values are base64 in JSON. Same keyspace and value size as lib.lua (KEYS, VALUE_BYTES), so
-- etcd and corekv see the same workload. Requests must be built in init() (see put/range):
-- wrk fills in the Host header only from then on, and etcd answers 400 without one.
local lib = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")
local M = {}

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function sextet(n)
  return alphabet:sub(n + 1, n + 1)
end

-- Standard base64 (RFC 4648, padded), what the gateway's JSON bytes fields expect.
function M.base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    out[#out + 1] = sextet(math.floor(n / 262144) % 64) .. sextet(math.floor(n / 4096) % 64) ..
      (b and sextet(math.floor(n / 64) % 64) or "=") .. (c and sextet(n % 64) or "=")
  end
  return table.concat(out)
end

function M.key(i)
  return string.format("key:%07d", i)
end

local function post(path, body)
  return wrk.format("POST", path, { ["Content-Type"] = "application/json" }, body)
end

-- One PUT request per key: POST /v3/kv/put {"key": b64, "value": b64(VALUE_BYTES of "v")}.
function M.puts()
  local value = M.base64(string.rep("v", lib.value_bytes))
  local requests = {}
  for i = 0, lib.keys - 1 do
    local body = string.format('{"key":"%s","value":"%s"}', M.base64(M.key(i)), value)
    requests[i + 1] = post("/v3/kv/put", body)
  end
  return requests
end

-- One read per key: POST /v3/kv/range {"key": b64}. Linearizable (etcd's default: a ReadIndex
-- round through the leader) unless SERIALIZABLE=1 asks for a local, possibly stale read.
function M.ranges()
  local serializable = os.getenv("SERIALIZABLE") == "1" and ',"serializable":true' or ""
  local requests = {}
  for i = 0, lib.keys - 1 do
    local body = string.format('{"key":"%s"%s}', M.base64(M.key(i)), serializable)
    requests[i + 1] = post("/v3/kv/range", body)
  end
  return requests
end

M.seed = lib.seed
M.report = lib.report

return M
