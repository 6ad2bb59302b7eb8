-- One decision of a circuit breaker, atomically: read the state, decide, write the new state.
-- The rules are in worker/breaker/base.py; worker/breaker/memory.py mirrors them in Python.
--
-- KEYS[1] the breaker (hash: state, failures, opened_ms, probe_until_ms; absent = closed)
--         failures: times (ms) of the last failures within the window, space-separated
-- KEYS[2] the registry of breakers, for `status` (sorted set: name -> last write, ms)
-- ARGV[1] operation: allow | success | failure
-- ARGV[2] the breaker's name (its member in the registry)
-- ARGV[3] now (ms), or "" for the Redis server's clock
-- ARGV[4] failure threshold   ARGV[5] window (ms)   ARGV[6] cool-down (ms)
-- ARGV[7] probe timeout (ms)  ARGV[8] retention (ms) of an idle open breaker and of the registry
-- Returns {allowed 0|1, state, previous state or "", retry after (ms), probe 0|1, reissued 0|1,
--          failures in the window}
local op, name = ARGV[1], ARGV[2]
local now
if ARGV[3] == "" then
  -- Redis 5 and later replicate scripts by their effects, so TIME may precede writes.
  local t = redis.call("time")
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[3])
end
local threshold, window, cooldown = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local probe_timeout, retain = tonumber(ARGV[7]), tonumber(ARGV[8])

local stored = redis.call("hmget", KEYS[1], "state", "failures", "opened_ms", "probe_until_ms")
local state = stored[1] or "closed"

local function register()
  redis.call("zadd", KEYS[2], now, name)
  redis.call("zremrangebyscore", KEYS[2], "-inf", now - retain)
  redis.call("pexpire", KEYS[2], retain)
end

local function open(count)
  redis.call("hset", KEYS[1], "state", "open", "opened_ms", now)
  redis.call("hdel", KEYS[1], "failures", "probe_until_ms")
  -- Kept past the cool-down so that the next caller, however late, is the only probe.
  redis.call("pexpire", KEYS[1], cooldown + probe_timeout + retain)
  register()
  return {0, "open", state, 0, 0, 0, count}
end

local function grant_probe(previous, reissued)
  redis.call("hset", KEYS[1], "state", "half_open", "probe_until_ms", now + probe_timeout)
  redis.call("pexpire", KEYS[1], probe_timeout + retain)
  register()
  return {1, "half_open", previous, 0, 1, reissued, 0}
end

if op == "allow" then
  if state == "open" then
    local ready_at = tonumber(stored[3]) + cooldown
    if now >= ready_at then
      return grant_probe("open", 0)
    end
    return {0, "open", "", ready_at - now, 0, 0, 0}
  elseif state == "half_open" then
    local until_ms = tonumber(stored[4])
    if now >= until_ms then
      return grant_probe("", 1)
    end
    return {0, "half_open", "", until_ms - now, 0, 0, 0}
  end
  return {1, "closed", "", 0, 0, 0, 0}
elseif op == "success" then
  if state == "half_open" then
    redis.call("del", KEYS[1])
    register()
    return {0, "closed", "half_open", 0, 0, 0, 0}
  end
  return {0, state, "", 0, 0, 0, 0}
elseif op == "failure" then
  if state == "half_open" then
    return open(1)
  elseif state == "open" then
    return {0, "open", "", 0, 0, 0, 0}
  end
  -- Closed: keep the failures still inside the window, at most the threshold's worth.
  local kept = {}
  for t in string.gmatch(stored[2] or "", "%S+") do
    if tonumber(t) > now - window then
      table.insert(kept, t)
    end
  end
  table.insert(kept, tostring(now))
  while #kept > threshold do
    table.remove(kept, 1)
  end
  if #kept >= threshold then
    return open(#kept)
  end
  redis.call("hset", KEYS[1], "state", "closed", "failures", table.concat(kept, " "))
  redis.call("pexpire", KEYS[1], window)
  register()
  return {0, "closed", "", 0, 0, 0, #kept}
end
return redis.error_reply("unknown breaker operation " .. tostring(op))
