-- Hands validated jobs to their Dramatiq queues (or batch lanes, worker/lanes.py) and settles their intake entries, atomically:
-- a job is enqueued exactly when its entry is acknowledged, and a job whose idempotency key
-- was already taken is acknowledged without being enqueued again.
--
-- KEYS: none by name (the keys of each record are in ARGV; one Redis, no cluster slots).
-- ARGV[1] intake stream key        ARGV[2] consumer group
-- ARGV[3] rejected stream key      ARGV[4] rejected stream max length (approximate)
-- ARGV[5] idempotency TTL (ms)
-- ARGV[6..] records of 9 fields each:
--   "job",    entry id or "", idempotency key or "", queue list key, queue hash key, message id, message,
--             overlap guard key or "", guard TTL (ms) or ""
--   "lane",   entry id, idempotency key or "", lane stream key, job, "", "", "", ""
--   "reject", entry id, original job text, error, "", "", "", "", ""
-- Returns one integer per record: 1 enqueued, 0 duplicate (acknowledged only), 2 rejected,
-- 3 skipped because the guard key is held (a scheduled run whose previous run is not done).
local intake, group, rejected = ARGV[1], ARGV[2], ARGV[3]
local rejected_maxlen, idem_ttl = ARGV[4], ARGV[5]
local out = {}
local i = 6
while i <= #ARGV do
  local kind, entry = ARGV[i], ARGV[i + 1]
  local result
  if kind == "job" then
    local idem, queue, msgs, message_id, message = ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
    local guard, guard_ttl = ARGV[i + 7], ARGV[i + 8]
    if guard ~= "" and redis.call("exists", guard) == 1 then
      result = 3
    else
      local fresh = true
      if idem ~= "" then
        fresh = redis.call("set", idem, entry ~= "" and entry or message_id, "NX", "PX", idem_ttl)
      end
      if fresh then
        if guard ~= "" then
          redis.call("set", guard, message_id, "PX", guard_ttl)
        end
        redis.call("hset", msgs, message_id, message)
        redis.call("rpush", queue, message_id)
        result = 1
      else
        result = 0
      end
    end
  elseif kind == "lane" then
    local idem, stream, job = ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
    if idem == "" or redis.call("set", idem, entry, "NX", "PX", idem_ttl) then
      redis.call("xadd", stream, "*", "job", job)
      result = 1
    else
      result = 0
    end
  else
    redis.call("xadd", rejected, "MAXLEN", "~", rejected_maxlen, "*",
      "job", ARGV[i + 2], "error", ARGV[i + 3], "entry", entry)
    result = 2
  end
  if entry ~= "" then
    redis.call("xack", intake, group, entry)
  end
  out[#out + 1] = result
  i = i + 9
end
return out
