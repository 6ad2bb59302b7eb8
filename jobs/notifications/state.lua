-- The Redis state of notification batches and caps. Each script runs atomically, which is what
-- makes a batch close exactly once and a cap admit exactly its limit under any concurrency.
-- Sections are split by state.py on lines "--- name".

--- add
-- Puts items into batches, in order, each as if added by a script of its own.
-- KEYS: for each item its batch and its notification's where-hash. ARGV: for each item 10 values:
-- field, item, new_id, now_ms, close_ms, max_items, user, channel, where_ttl_ms, direct.
-- Returns for each item: batch id, close ms, 1 when the close is new or earlier, items.
local out = {}
for i = 1, #KEYS, 2 do
  local batch, where = KEYS[i], KEYS[i + 1]
  local a = (i - 1) * 5
  local field, now_ms, max_items = ARGV[a + 1], tonumber(ARGV[a + 4]), tonumber(ARGV[a + 6])
  local created = 0
  if redis.call('EXISTS', batch) == 0 then
    redis.call('HSET', batch, 'm:id', ARGV[a + 3], 'm:opened', ARGV[a + 4], 'm:close', ARGV[a + 5],
      'm:n', 0, 'm:received', 0, 'm:user', ARGV[a + 7], 'm:channel', ARGV[a + 8], 'm:direct', ARGV[a + 10])
    created = 1
  end
  if redis.call('HEXISTS', batch, field) == 0 then
    redis.call('HINCRBY', batch, 'm:n', 1)
  end
  redis.call('HSET', batch, field, ARGV[a + 2])
  redis.call('HINCRBY', batch, 'm:received', 1)
  local meta = redis.call('HMGET', batch, 'm:n', 'm:close', 'm:id')
  local n, close = tonumber(meta[1]), tonumber(meta[2])
  local want = tonumber(ARGV[a + 5])
  if n >= max_items then want = math.min(want, now_ms) end
  local moved = created
  if want < close then
    close = want
    redis.call('HSET', batch, 'm:close', close)
    moved = 1
  end
  redis.call('HSET', where, ARGV[a + 8], batch .. '\n' .. field)
  redis.call('PEXPIRE', where, ARGV[a + 9])
  out[#out + 1] = meta[3]
  out[#out + 1] = close
  out[#out + 1] = moved
  out[#out + 1] = n
end
return out

--- claim
-- KEYS: batch, flushing. ARGV: batch id, owner, lease_ms, now_ms.
-- Returns 1 claimed now, 2 resumed (same owner, or a lapsed lease), 3 held by another, 0 gone.
local now = tonumber(ARGV[4])
if redis.call('HGET', KEYS[1], 'm:id') == ARGV[1] then
  redis.call('RENAME', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[2], 'm:owner', ARGV[2], 'm:lease', now + tonumber(ARGV[3]))
  return 1
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  local owner = redis.call('HGET', KEYS[2], 'm:owner')
  local lease = tonumber(redis.call('HGET', KEYS[2], 'm:lease'))
  if owner == ARGV[2] or lease <= now then
    redis.call('HSET', KEYS[2], 'm:owner', ARGV[2], 'm:lease', now + tonumber(ARGV[3]))
    return 2
  end
  return 3
end
return 0

--- cancel
-- KEYS: batch. ARGV: field, notification id ('' for any). Returns 0 none, 1 removed, 2 removed
-- the last item (the batch is gone; its close, when it comes, finds nothing).
local item = redis.call('HGET', KEYS[1], ARGV[1])
if not item then return 0 end
if ARGV[2] ~= '' and cjson.decode(item)['notification_id'] ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HINCRBY', KEYS[1], 'm:n', -1) <= 0 then
  redis.call('DEL', KEYS[1])
  return 2
end
return 1

--- caps
-- KEYS: the user's deliveries on a channel. ARGV: now_ms, per_hour, per_day (0: none), member,
-- mode ('peek', 'take': count when under both caps, 'force': count regardless).
-- Returns {admitted, last hour, last day, hour room ms or -1, day room ms or -1} (before counting).
local now = tonumber(ARGV[1])
local hour_ms, day_ms = 3600000, 86400000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - day_ms)
local hour = redis.call('ZCOUNT', KEYS[1], '(' .. (now - hour_ms), '+inf')
local day = redis.call('ZCARD', KEYS[1])
local function room(min, count, limit, window)
  if limit <= 0 or count < limit then return -1 end
  local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], min, '+inf', 'WITHSCORES', 'LIMIT', count - limit, 1)
  return tonumber(oldest[2]) + window
end
local per_hour, per_day = tonumber(ARGV[2]), tonumber(ARGV[3])
local hour_room = room('(' .. (now - hour_ms), hour, per_hour, hour_ms)
local day_room = room('-inf', day, per_day, day_ms)
local admitted = 0
if ARGV[5] == 'force' or (ARGV[5] == 'take' and hour_room == -1 and day_room == -1) then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], day_ms)
  admitted = 1
end
return {admitted, hour, day, hour_room, day_room}

--- snapshot
-- KEYS: for each notification the user's profile token, then for each of its channels the job's
-- done mark on it and the user's batch on it. ARGV: each notification's number of channels.
-- Returns for each notification its token ('' when none), then for each channel: 1 when done,
-- the batch's opening ms (-1: no batch), its size.
local out = {}
local k = 1
for j = 1, #ARGV do
  out[#out + 1] = redis.call('GET', KEYS[k]) or ''
  k = k + 1
  for _ = 1, tonumber(ARGV[j]) do
    out[#out + 1] = redis.call('EXISTS', KEYS[k])
    local meta = redis.call('HMGET', KEYS[k + 1], 'm:opened', 'm:n')
    out[#out + 1] = tonumber(meta[1]) or -1
    out[#out + 1] = tonumber(meta[2]) or 0
    k = k + 2
  end
end
return out

--- report
-- KEYS: the events stream, then the done mark of each (job, channel) decided.
-- ARGV: the stream's approximate max length, the marks' TTL (s), then each event's JSON.
-- Publishes the events and sets the marks together: a job never reports a channel twice.
for i = 3, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'event', ARGV[i])
end
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], '1', 'EX', ARGV[2])
end
return #ARGV - 2
