"""What the scheduler keeps in Redis: last fires (for catch-up) and its status (for `status`).

``keys.scheduler_state`` (hash): entry name -> ISO 8601 UTC time up to which its fires are
settled: the scheduled time of its last fire (run, duplicate or skipped), or, before its first
fire, when a leader first saw the entry. A new leader catches up the fires after it.

``keys.scheduler_status`` (hash): the leader's status for `status`; status.py lists its fields.
"""

from __future__ import annotations

from datetime import datetime

import redis

from worker.keys import Keys
from worker.scheduler.timing import iso, parse_iso

# Replace the leader's fields of the status hash, keeping reload errors written by others.
# KEYS[1] keys.scheduler_status   ARGV: field, value, field, value, ...
_WRITE_STATUS = """
local current = redis.call("hkeys", KEYS[1])
for _, name in ipairs(current) do
  if name ~= "reload_error" and name ~= "reload_error_at" then
    redis.call("hdel", KEYS[1], name)
  end
end
if #ARGV > 0 then
  redis.call("hset", KEYS[1], unpack(ARGV))
end
return 1
"""

# Drop the leader fields if they are ours (a clean stop).
# KEYS[1] keys.scheduler_status   ARGV[1] our leader id
_CLEAR_LEADER = """
if redis.call("hget", KEYS[1], "leader") == ARGV[1] then
  return redis.call("hdel", KEYS[1], "leader", "leader_since")
end
return 0
"""


class SchedulerStore:
    """The scheduler's Redis reads and writes. Every method may raise redis.RedisError."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._write_status = client.register_script(_WRITE_STATUS)
        self._clear_leader = client.register_script(_CLEAR_LEADER)

    def settled(self, names: list[str], now: datetime) -> dict[str, datetime]:
        """Each entry's settled time; an entry seen for the first time is settled at ``now``."""
        if not names:
            return {}
        key = self._keys.scheduler_state
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            pipe.hsetnx(key, name, iso(now))
        for name in names:
            pipe.hget(key, name)
        values = pipe.execute()[len(names) :]
        out: dict[str, datetime] = {}
        for name, value in zip(names, values, strict=True):
            try:
                out[name] = parse_iso(_text(value))
            except ValueError:
                # Not ours to interpret (edited by hand?): start the entry afresh.
                self.record(name, now)
                out[name] = now
        return out

    def record(self, name: str, settled: datetime) -> None:
        self._client.hset(self._keys.scheduler_state, name, iso(settled))

    def write_status(self, fields: dict[str, str]) -> None:
        args: list[str] = []
        for name, value in fields.items():
            args.extend((name, value))
        self._write_status(keys=[self._keys.scheduler_status], args=args)

    def clear_leader(self, leader_id: str) -> None:
        self._clear_leader(keys=[self._keys.scheduler_status], args=[leader_id])

    def set_reload_error(self, message: str, at: datetime) -> None:
        self._client.hset(
            self._keys.scheduler_status, mapping={"reload_error": message, "reload_error_at": iso(at)}
        )

    def clear_reload_error(self) -> None:
        self._client.hdel(self._keys.scheduler_status, "reload_error", "reload_error_at")


def _text(value: bytes | str | None) -> str:
    if value is None:
        raise ValueError("missing scheduler state")
    return value.decode() if isinstance(value, bytes) else value
