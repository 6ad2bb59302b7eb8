"""The scheduler's leader lock: several daemons share one Redis, exactly one of them fires.

The lock is one key (``keys.scheduler_leader``) holding the leader's id, taken with SET NX PX
and renewed by its holder every ttl/3. A leader whose renewals fail keeps leading only until
the lease it last confirmed runs out, measured on its own monotonic clock from the moment it
*sent* the renewal, so it stops before Redis lets the key expire and a standby takes it. A
standby tries every ttl/3, so it takes over at most ttl + ttl/3 after the leader's last renewal
(13.3 s with the default TASKMASTER_SCHEDULER_LOCK_TTL of 10 s).
"""

from __future__ import annotations

import os
import socket
import time
import uuid

import redis

# Compare-and-pexpire: renew only our own lock.
# KEYS[1] lock key   ARGV[1] our token   ARGV[2] ttl in ms
# Returns 1 when renewed, 0 when the lock is not ours (expired, or taken by another daemon).
_RENEW = """
if redis.call("get", KEYS[1]) == ARGV[1] then
  return redis.call("pexpire", KEYS[1], ARGV[2])
end
return 0
"""

# Compare-and-delete: release only our own lock.
# KEYS[1] lock key   ARGV[1] our token
# Returns 1 when released, 0 when it was not ours.
_RELEASE = """
if redis.call("get", KEYS[1]) == ARGV[1] then
  return redis.call("del", KEYS[1])
end
return 0
"""

# Renewals leave this share of the lease unused, for clock drift between us and Redis.
_SAFETY = 0.1


def new_leader_id() -> str:
    """Unique per scheduler instance, readable by operators: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaderLock:
    def __init__(self, client: redis.Redis, key: str, token: str, ttl_s: float) -> None:
        self._client = client
        self.key = key
        self.token = token
        self.ttl_ms = max(int(ttl_s * 1000), 100)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._valid_until = 0.0  # monotonic

    @property
    def renew_interval_s(self) -> float:
        return self.ttl_ms / 3000

    def held(self) -> bool:
        """True while the lease we last confirmed has not run out."""
        return time.monotonic() < self._valid_until

    def acquire(self) -> bool:
        """Take the lock if it is free (or already ours). Raises redis.RedisError."""
        sent = time.monotonic()
        if self._client.set(self.key, self.token, nx=True, px=self.ttl_ms):
            self._confirm(sent)
            return True
        return self.renew()

    def renew(self) -> bool:
        """Extend our lock; False (and no longer held) if it is not ours. Raises redis.RedisError."""
        sent = time.monotonic()
        if int(self._renew(keys=[self.key], args=[self.token, self.ttl_ms])) == 1:
            self._confirm(sent)
            return True
        self._valid_until = 0.0
        return False

    def release(self) -> bool:
        """Give the lock up if it is ours, so a standby takes over at once."""
        self._valid_until = 0.0
        return int(self._release(keys=[self.key], args=[self.token])) == 1

    def forget(self) -> None:
        """Stop counting on the lease without telling Redis (it will expire on its own)."""
        self._valid_until = 0.0

    def holder(self) -> str | None:
        value = self._client.get(self.key)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def _confirm(self, sent: float) -> None:
        self._valid_until = sent + self.ttl_ms / 1000 * (1 - _SAFETY)
