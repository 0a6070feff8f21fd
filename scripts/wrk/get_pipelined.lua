-- Random GETs pipelined PIPELINE deep (default 16): each write carries PIPELINE requests and
-- the next write waits for all their responses (see lib.lua for the settings).
local lib = dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "lib.lua")
local batches = {}
local BATCHES_COUNT = 4096

function init(args)
  lib.seed()
  local gets = lib.gets()
  for b = 1, BATCHES_COUNT do
    local parts = {}
    for i = 1, lib.depth do
      parts[i] = gets[math.random(#gets)]
    end
    batches[b] = table.concat(parts)
  end
end

function request()
  return batches[math.random(BATCHES_COUNT)]
end

done = lib.report
