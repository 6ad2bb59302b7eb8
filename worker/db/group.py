"""Group commit: the writes of every thread of a process, in shared transactions.

Each worker thread that wrote on its own paid a transaction per write: on SQLite each takes the
database's single write lock, so 2 processes of 16 threads spent most of their time queueing
for it (and in SQLite's busy handler, which sleeps), and on PostgreSQL each commit is a round
trip and a WAL flush. Here a thread hands its write to the process's writer thread and waits
for the commit; the writer takes every write waiting at that moment and runs them in one
transaction, the writes of one kind as one statement (``Kind.run_many``). Nothing is delayed
on purpose: writes batch up by themselves while the previous transaction runs, as in a
database's own group commit. A caller returns only once its write is committed, so "record the
attempt before the call" still holds.

SQLAlchemy has no such thing (its unit of work is one session of one thread); a database's own
group commit batches fsyncs, not lock hand-overs nor statements. Hence this small module.

When a shared transaction fails, each write of it is tried again alone, so one bad write fails
its own caller only.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine

from worker.logging import get_logger

log = get_logger(__name__)

A = TypeVar("A")
R = TypeVar("R")

# Writes taken into one transaction at most: bounds a transaction's length under a backlog.
MAX_WRITES = 500
# The longest a caller waits for its commit before giving up with an error (its job is retried;
# the write may still commit, which the writes here are made to allow: upserts, guarded updates).
WAIT_S = 120.0


@dataclass(frozen=True)
class Kind(Generic[A, R]):
    """One kind of write: ``run_many`` does many of them on a connection, one result each, in
    order. Kinds run in the order of ``rank`` within a transaction (lower first)."""

    name: str
    run_many: Callable[[Connection, Sequence[A]], Sequence[R]]
    rank: int = 0


@dataclass
class _Write:
    kind: Kind[Any, Any]
    argument: Any
    future: Future[Any]


_STOP = object()


class GroupCommit:
    """The writer of one engine in one process; ``write`` from any thread."""

    def __init__(self, engine: Engine, *, name: str = "db-writer") -> None:
        self._engine = engine
        self._queue: queue.SimpleQueue[_Write | object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._name = name

    def write(self, kind: Kind[A, R], argument: A) -> R:
        """Run one write of ``kind`` in the next shared transaction; its result once committed."""
        future: Future[R] = Future()
        self._start()
        self._queue.put(_Write(kind, argument, future))
        try:
            return future.result(timeout=WAIT_S)
        except TimeoutError:
            raise TimeoutError(
                f"the database did not commit a {kind.name} write within {WAIT_S:.0f} s"
            ) from None

    def close(self) -> None:
        """Finish the writes already handed over, then stop the writer thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()
        while True:  # a write that slipped in behind the stop fails instead of waiting forever
            try:
                late = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(late, _Write):
                late.future.set_exception(RuntimeError("the database writer is closed"))

    def _start(self) -> None:
        if self._closed:
            raise RuntimeError("the database writer is closed")
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None and not self._closed:
                self._spawn()

    def _spawn(self) -> None:
        """Start a writer thread (with the lock held)."""
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            assert isinstance(first, _Write)
            writes = [first]
            stop = False
            while len(writes) < MAX_WRITES:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                    break
                assert isinstance(more, _Write)
                writes.append(more)
            try:
                self._commit(writes)
            except BaseException as exc:
                # Never leave a caller waiting, whatever happened (every error is meant to be its
                # callers', so this should not be): fail these, and hand the queue to a new writer.
                for write in writes:
                    if not write.future.done():
                        write.future.set_exception(exc)
                with self._lock:
                    self._thread = None
                    if not self._closed:
                        self._spawn()
                raise
            if stop:
                return

    def _commit(self, writes: list[_Write]) -> None:
        try:
            results = self._transaction(writes)
        except Exception as exc:
            if len(writes) == 1:
                writes[0].future.set_exception(exc)
                return
            log.debug("db.group_commit_split", writes=len(writes), error=str(exc))
            for write in writes:  # one bad write must not fail the others
                self._commit([write])
            return
        for write, result in zip(writes, results, strict=True):
            write.future.set_result(result)

    def _transaction(self, writes: list[_Write]) -> list[Any]:
        by_kind: dict[str, list[int]] = {}
        kinds: dict[str, Kind[Any, Any]] = {}
        for index, write in enumerate(writes):
            by_kind.setdefault(write.kind.name, []).append(index)
            kinds[write.kind.name] = write.kind
        results: list[Any] = [None] * len(writes)
        with self._engine.begin() as connection:
            for name in sorted(by_kind, key=lambda n: kinds[n].rank):
                indexes = by_kind[name]
                answers = kinds[name].run_many(connection, [writes[i].argument for i in indexes])
                for index, answer in zip(indexes, answers, strict=True):
                    results[index] = answer
        return results
