-- Random linearizable GET (range of one key) over KEYS preloaded keys through etcd's v3 JSON
-- gateway (see etcd_lib.lua; SERIALIZABLE=1 for local reads). Built in init(), for the Host header.
local etcd = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "etcd_lib.lua")
local requests, n

function init(args)
  etcd.seed()
  requests = etcd.ranges()
  n = #requests
end

function request()
  return requests[math.random(n)]
end

done = etcd.report
