"""What the intake and the lanes share as readers of streams: their pace, and the care of their
consumer groups."""

from __future__ import annotations

import threading

import redis

# After a batch of fewer than SMALL_BATCH entries, the wait before the next read (Kafka's
# linger): a few more arrive meanwhile, and a batch's read, scripts and acknowledgement cost
# about the same for 2 entries as for 10. Adds at most this to an entry's wait, and only under a
# trickle. (The intake's batches at 1,000 jobs/s went from ~2 to ~6.)
LINGER_S = 0.005
SMALL_BATCH = 8


def linger_after(taken: int, stop: threading.Event) -> None:
    """Wait LINGER_S (or until ``stop``) when the batch just taken was a small one."""
    if 0 < taken < SMALL_BATCH:
        stop.wait(LINGER_S)


# A consumer silent this long with nothing pending is a process that is gone: each process
# reads under a name of its own (host-pid), so every restart leaves one behind.
FORGET_IDLE_S = 3600.0

# One script, so that no entry reaches a consumer between the check and its removal (removing
# a consumer drops its pending entries from the group: they would never be claimed again).
_FORGET = """
local gone = 0
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local fields = {}
  for i = 1, #consumer, 2 do fields[consumer[i]] = consumer[i + 1] end
  if fields['name'] ~= ARGV[2] and fields['pending'] == 0 and fields['idle'] >= tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], fields['name'])
    gone = gone + 1
  end
end
return gone
"""


def forget_idle_consumers(
    client: redis.Redis, stream: str, group: str, *, keep: str, idle_s: float | None = None
) -> int:
    """Remove from ``group`` the consumers idle for ``idle_s`` (FORGET_IDLE_S) that hold no
    pending entry, except ``keep`` (the caller's own name); return how many. A live consumer
    removed by mistake loses nothing: it holds no entry, and its next read makes it again."""
    idle_ms = int((FORGET_IDLE_S if idle_s is None else idle_s) * 1000)
    return int(client.register_script(_FORGET)(keys=[stream], args=[group, keep, idle_ms]))
