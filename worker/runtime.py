"""The services of one process, built once from the settings and passed down."""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import redis

from worker.events import Events
from worker.keys import Keys
from worker.redis_conn import connect, redis_url
from worker.registry import Registry
from worker.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from worker.db.group import GroupCommit


def settle_heap() -> None:
    """Once a process has started: move what it has built so far (modules, settings, compiled
    scripts and queries, ~230,000 objects) out of the garbage collector's view, for good.

    They live as long as the process, and every full collection scanned them all: 60-140 ms
    pauses in the lanes process, each stalling a batch's decisions, every few seconds under
    load. Afterwards a full collection looks at what came later (5-15 ms). Python's documented
    use of ``gc.freeze`` is before a fork; the pause it saves here is the same.
    """
    gc.collect()
    gc.freeze()


@dataclass
class Runtime:
    settings: Settings
    registry: Registry
    redis: redis.Redis = field(init=False)

    def __post_init__(self) -> None:
        self.redis = connect(redis_url(self.settings))

    @cached_property
    def keys(self) -> Keys:
        return Keys(self.settings.redis_prefix)

    @cached_property
    def events(self) -> Events:
        return Events(self.redis, self.keys, self.settings.events_maxlen)

    @cached_property
    def db(self) -> Engine:
        from worker.db.session import make_engine

        # A connection for each worker thread, the group commit's writer and the maintenance pass.
        return make_engine(self.settings.sqlalchemy_url, pool_size=self.settings.threads + 2)

    @cached_property
    def reader(self) -> Engine:
        """``db`` for hot-path reads: on SQLite they do not queue for the write lock."""
        from worker.db.session import reader

        return reader(self.db)

    @cached_property
    def writer(self) -> GroupCommit:
        """The process's group commit on ``db``: hot-path writes of every thread, shared."""
        from worker.db.group import GroupCommit

        return GroupCommit(self.db)

    def close(self) -> None:
        self.redis.close()
        if "writer" in self.__dict__:
            self.writer.close()
        if "db" in self.__dict__:
            self.db.dispose()
