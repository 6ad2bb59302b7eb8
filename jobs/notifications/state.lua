-- The Redis state of notification batches and caps. Each script runs atomically, which is what
-- makes a batch close exactly once and a cap admit exactly its limit under any concurrency.
-- Sections are split by state.py on lines "--- name".

--- add
-- Puts items into batches, in order, each as if added by a script of its own.
-- ARGV[1]: the keys' root (NotifKeys.root); ARGV[2]: JSON, for each item 11 strings: its batch's
-- key, field, new_id, now_ms, close_ms, max_items, user, channel, where_ttl_ms, direct and the
-- notification's id (its where-hash is root .. 'where:' .. id); then each item's JSON, in order.
-- Keys go as values, not KEYS: sending a batch's hundreds of arguments one by one cost more than
-- the script.
-- Returns for each item: batch id, close ms, 1 when the close is new or earlier, items.
local root = ARGV[1]
local out = {}
for i, a in ipairs(cjson.decode(ARGV[2])) do
  local batch, field, item = a[1], a[2], ARGV[2 + i]
  local now_ms, max_items = tonumber(a[4]), tonumber(a[6])
  local where = root .. 'where:' .. a[11]
  local created = 0
  if redis.call('EXISTS', batch) == 0 then
    redis.call('HSET', batch, 'm:id', a[3], 'm:opened', a[4], 'm:close', a[5],
      'm:n', 0, 'm:received', 0, 'm:user', a[7], 'm:channel', a[8], 'm:direct', a[10])
    created = 1
  end
  if redis.call('HEXISTS', batch, field) == 0 then
    redis.call('HINCRBY', batch, 'm:n', 1)
  end
  redis.call('HSET', batch, field, item)
  redis.call('HINCRBY', batch, 'm:received', 1)
  local meta = redis.call('HMGET', batch, 'm:n', 'm:close', 'm:id')
  local n, close = tonumber(meta[1]), tonumber(meta[2])
  local want = tonumber(a[5])
  if n >= max_items then want = math.min(want, now_ms) end
  local moved = created
  if want < close then
    close = want
    redis.call('HSET', batch, 'm:close', close)
    moved = 1
  end
  redis.call('HSET', where, a[8], batch .. '\n' .. field)
  redis.call('PEXPIRE', where, a[9])
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
-- ARGV[1]: the keys' root; ARGV[2]: JSON, for each notification [user, its job's idempotency
-- key, [channel, ...]]. Reads the user's profile token, then for each channel the job's done mark
-- on it and the user's batch on it.
-- Returns for each notification its token ('' when none), then for each channel: 1 when done,
-- the batch's opening ms (-1: no batch), its size.
local root = ARGV[1]
local out = {}
for _, ask in ipairs(cjson.decode(ARGV[2])) do
  local user, job = ask[1], ask[2]
  out[#out + 1] = redis.call('GET', root .. 'profile:' .. user) or ''
  for _, channel in ipairs(ask[3]) do
    out[#out + 1] = redis.call('EXISTS', root .. 'done:' .. job .. ':' .. channel)
    local meta = redis.call('HMGET', root .. 'batch:' .. user .. ':' .. channel, 'm:opened', 'm:n')
    out[#out + 1] = tonumber(meta[1]) or -1
    out[#out + 1] = tonumber(meta[2]) or 0
  end
end
return out

--- report
-- KEYS[1]: the events stream. ARGV: its approximate max length, the marks' TTL (s), the keys'
-- root, JSON [[job's idempotency key, channel], ...] of the marks to set, then the events, one
-- JSON text per line (compact JSON has no line breaks).
-- Publishes the events and sets the marks together: a job never reports a channel twice.
local published = 0
for event in string.gmatch(ARGV[5], '[^\n]+') do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'event', event)
  published = published + 1
end
for _, mark in ipairs(cjson.decode(ARGV[4])) do
  redis.call('SET', ARGV[3] .. 'done:' .. mark[1] .. ':' .. mark[2], '1', 'EX', ARGV[2])
end
return published
