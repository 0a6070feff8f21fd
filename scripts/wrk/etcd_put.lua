-- Random PUT of a VALUE_BYTES value over KEYS keys through etcd's v3 JSON gateway
-- (see etcd_lib.lua). Built in init(): requests built at load time lack the Host header.
local etcd = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "etcd_lib.lua")
local requests, n

function init(args)
  etcd.seed()
  requests = etcd.puts()
  n = #requests
end

function request()
  return requests[math.random(n)]
end

done = etcd.report
