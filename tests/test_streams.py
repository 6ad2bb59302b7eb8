"""Consumer groups keep no trace of processes long gone."""

from __future__ import annotations

import time

import redis

from worker.streams import forget_idle_consumers


def names(client: redis.Redis, stream: str, group: str) -> set[str]:
    return {c["name"].decode() for c in client.xinfo_consumers(stream, group)}


def take(client: redis.Redis, consumer: str, *, ack: bool = True) -> None:
    """``consumer`` reads one entry (which makes it a member of the group), and settles it."""
    entry = client.xadd("s", {"job": consumer})
    client.xreadgroup("g", consumer, {"s": ">"}, count=1)
    if ack:
        client.xack("s", "g", entry)


def test_idle_consumers_holding_nothing_are_forgotten(redis_client: redis.Redis) -> None:
    redis_client.xgroup_create("s", "g", id="0", mkstream=True)
    take(redis_client, "holder", ack=False)  # dead, but holds an entry another must claim
    take(redis_client, "gone")
    take(redis_client, "me")
    time.sleep(0.05)
    take(redis_client, "fresh")
    assert forget_idle_consumers(redis_client, "s", "g", keep="me", idle_s=0.04) == 1
    assert names(redis_client, "s", "g") == {"holder", "me", "fresh"}
    assert redis_client.xpending("s", "g")["pending"] == 1  # the holder's entry is still claimable
