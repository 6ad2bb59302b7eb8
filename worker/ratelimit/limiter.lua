-- Decides a batch of rate-limit requests with GCRA, in order, each all-or-nothing across its
-- checks: a request is counted on every one of its keys or on none. Time is Redis's own TIME,
-- so every daemon on every machine measures against one clock.
--
-- KEYS: the state key of every check of every request, in request order (one TAT each, in
--       microseconds of wall time, as an integer string, expiring when the TAT passes).
-- ARGV[1] "1" to count admitted requests, "0" to only say what each would get (peek), "2" to
--         count admitted requests and book a refused one the first slot it would get (its TATs
--         move on as if admitted: whoever asks next is told to wait for the slot after it)
-- ARGV[2] the numbers of the batch in one space-separated string (one argument, not dozens:
--         the client encodes each argument in Python, which costs more than this parse):
--         number of requests, then for each request: cost, number of checks n, then n pairs of
--         (emission interval in µs, bucket capacity in µs = burst * interval)
-- Returns one integer per request: 0 when admitted, else microseconds to wait (>= 1).

-- Redis >= 5 replicates script effects by default; older ones need this before TIME is
-- followed by writes. Redis 7 keeps it as a no-op.
if redis.replicate_commands then
  redis.replicate_commands()
end

local clock = redis.call("TIME")
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local commit = ARGV[1] ~= "0"
local book = ARGV[1] == "2"
local num = {}
for word in string.gmatch(ARGV[2], "%S+") do
  num[#num + 1] = tonumber(word)
end
local out = {}
local a = 2
local k = 1
for r = 1, num[1] do
  local cost, n = num[a], num[a + 1]
  a = a + 2
  local wait = 0
  local new_tats = {}
  for c = 1, n do
    local interval, capacity = num[a], num[a + 1]
    a = a + 2
    local tat = tonumber(redis.call("GET", KEYS[k + c - 1]) or 0)
    if tat < now then
      tat = now
    end
    local new_tat = tat + cost * interval
    local late = new_tat - capacity - now
    if late > wait then
      wait = late
    end
    new_tats[c] = math.ceil(new_tat)
  end
  if (wait <= 0 and commit) or (wait > 0 and book) then
    for c = 1, n do
      -- %.0f keeps all 16 digits of a µs timestamp, which tostring's %.14g would round.
      redis.call("SET", KEYS[k + c - 1], string.format("%.0f", new_tats[c]),
        "PX", math.ceil((new_tats[c] - now) / 1000))
    end
  end
  if wait > 0 then
    out[r] = math.ceil(wait)
  else
    out[r] = 0
  end
  k = k + n
end
return out
