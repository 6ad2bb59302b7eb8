-- Releases due jobs into their Dramatiq queues, atomically: each item leaves the due set
-- exactly when its message enters its queue, however many daemons run this at once.
--
-- KEYS[1] the due set (sorted set: item key -> due time, ms)
-- KEYS[2] the due items (hash: item key -> JSON {queue, msgs, id, message})
-- ARGV[1] now (ms)   ARGV[2] at most this many items
-- Returns the number of items released.
local keys = redis.call("zrangebyscore", KEYS[1], "-inf", ARGV[1], "LIMIT", 0, tonumber(ARGV[2]))
for _, key in ipairs(keys) do
  local raw = redis.call("hget", KEYS[2], key)
  if raw then
    local item = cjson.decode(raw)
    redis.call("hset", item["msgs"], item["id"], item["message"])
    redis.call("rpush", item["queue"], item["id"])
  end
  redis.call("zrem", KEYS[1], key)
  redis.call("hdel", KEYS[2], key)
end
return #keys
