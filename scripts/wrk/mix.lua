-- 90% random GET, 10% random PUT over the keyspace (see lib.lua for the settings).
local lib = dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "lib.lua")
local gets, puts, n

function init(args)
  lib.seed()
  gets = lib.gets()
  puts = lib.puts()
  n = #gets
end

function request()
  if math.random(10) == 1 then
    return puts[math.random(n)]
  end
  return gets[math.random(n)]
end

done = lib.report
