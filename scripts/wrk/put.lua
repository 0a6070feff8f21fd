-- Random PUT of a VALUE_BYTES value over the keyspace (see lib.lua for the settings).
local lib = dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "lib.lua")
local requests, n

function init(args)
  lib.seed()
  requests = lib.puts()
  n = #requests
end

function request()
  return requests[math.random(n)]
end

done = lib.report
