"""Group commit: the writes of many threads share transactions, each caller gets its own answer."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy import Column, Connection, Engine, Integer, MetaData, String, Table, event, insert, select

from worker.db.group import GroupCommit, Kind
from worker.db.session import make_engine, reader

metadata = MetaData()
rows = Table("rows", metadata, Column("n", Integer, primary_key=True), Column("who", String(20)))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'group.sqlite3'}")
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def commits_of(engine: Engine) -> list[int]:
    commits: list[int] = []
    event.listen(engine, "commit", lambda _conn: commits.append(1))
    return commits


def insert_many(conn: Connection, numbers: Sequence[int]) -> list[int]:
    conn.execute(insert(rows), [{"n": n, "who": "thread"} for n in numbers])
    return [n * 10 for n in numbers]


INSERT = Kind("test.insert", insert_many)


def test_waiting_writes_share_one_transaction_and_each_caller_gets_its_answer(engine: Engine) -> None:
    first_running, release = threading.Event(), threading.Event()

    def slow_first(conn: Connection, numbers: Sequence[int]) -> list[int]:
        if 0 in numbers:  # hold the first transaction until every other write is waiting
            first_running.set()
            release.wait(10)
        return insert_many(conn, numbers)

    kind = Kind("test.slow", slow_first)
    writer = GroupCommit(engine)
    commits = commits_of(engine)
    answers: dict[int, int] = {}

    def write(n: int) -> None:
        answers[n] = writer.write(kind, n)

    first = threading.Thread(target=write, args=(0,))
    first.start()
    assert first_running.wait(10)
    others = [threading.Thread(target=write, args=(n,)) for n in range(1, 16)]
    for thread in others:
        thread.start()
    while writer._queue.qsize() < 15:  # every other write handed over
        threading.Event().wait(0.001)
    release.set()
    for thread in [first, *others]:
        thread.join(10)
    writer.close()
    assert answers == {n: n * 10 for n in range(16)}
    assert len(commits) == 2  # the first alone, then the fifteen that waited for it together
    with engine.connect() as conn:
        assert sorted(conn.execute(select(rows.c.n)).scalars()) == list(range(16))


def test_a_bad_write_fails_its_own_caller_only(engine: Engine) -> None:
    writer = GroupCommit(engine)
    writer.write(INSERT, 7)
    errors: list[Exception] = []
    done: list[int] = []

    def write(n: int) -> None:
        try:
            done.append(writer.write(INSERT, n))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in [1, 2, 7, 3, 4]]  # 7: a duplicate key
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    writer.close()
    assert sorted(done) == [10, 20, 30, 40]
    assert len(errors) == 1 and "UNIQUE" in str(errors[0])
    with engine.connect() as conn:
        assert sorted(conn.execute(select(rows.c.n)).scalars()) == [1, 2, 3, 4, 7]


def test_kinds_run_by_rank_within_a_transaction(engine: Engine) -> None:
    order: list[str] = []
    first_running, release = threading.Event(), threading.Event()

    def named(name: str, rank: int) -> Kind[int, None]:
        def run(_conn: Connection, numbers: Sequence[int]) -> list[None]:
            if name == "first":
                first_running.set()
                release.wait(10)
            order.append(name)
            return [None] * len(numbers)

        return Kind(name, run, rank=rank)

    writer = GroupCommit(engine)
    threads = [threading.Thread(target=writer.write, args=(named("first", 0), 0))]
    threads[0].start()
    assert first_running.wait(10)
    for name, rank in (("late", 1), ("early", 0)):  # handed over late first
        threads.append(threading.Thread(target=writer.write, args=(named(name, rank), 0)))
        threads[-1].start()
    while writer._queue.qsize() < 2:
        threading.Event().wait(0.001)
    release.set()
    for thread in threads:
        thread.join(10)
    writer.close()
    assert order == ["first", "early", "late"]


def test_close_finishes_what_was_handed_over_and_refuses_more(engine: Engine) -> None:
    writer = GroupCommit(engine)
    assert writer.write(INSERT, 1) == 10
    writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        writer.write(INSERT, 2)
    with engine.connect() as conn:
        assert list(conn.execute(select(rows.c.n)).scalars()) == [1]


def test_a_reader_reads_while_a_writer_holds_the_write_lock(engine: Engine) -> None:
    """Reads through ``reader`` begin DEFERRED: they do not queue behind a writer's transaction
    (every other transaction on SQLite begins IMMEDIATE and would wait for the lock)."""
    with engine.begin() as conn:
        conn.execute(insert(rows), [{"n": 1, "who": "before"}])
    holding, read_done = threading.Event(), threading.Event()
    released_by_the_read: list[bool] = []

    def hold_the_lock() -> None:
        with engine.begin() as conn:
            conn.execute(insert(rows), [{"n": 2, "who": "writer"}])
            holding.set()
            released_by_the_read.append(read_done.wait(10))

    writer = threading.Thread(target=hold_the_lock)
    writer.start()
    assert holding.wait(10)
    with reader(engine).connect() as conn:
        seen = list(conn.execute(select(rows.c.n)).scalars())
    read_done.set()
    writer.join(10)
    assert seen == [1]  # the writer's row is not committed yet
    assert released_by_the_read == [True]  # the read did not wait for the writer


class Interrupted(BaseException):
    """Not an Exception: what would end the writer thread itself."""


# The writer thread ends with the exception, as meant: pytest reports that as a warning.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_writer_thread_that_died_fails_its_callers_and_is_replaced(engine: Engine) -> None:
    def interrupted(_conn: Connection, _numbers: Sequence[int]) -> list[int]:
        raise Interrupted

    writer = GroupCommit(engine)
    assert writer.write(INSERT, 1) == 10
    first = writer._thread
    assert first is not None
    with pytest.raises(Interrupted):
        writer.write(Kind("test.interrupted", interrupted), 2)
    first.join(10)  # it ends with the exception, within this test
    assert not first.is_alive()
    assert writer.write(INSERT, 3) == 30  # a new writer thread took over
    assert writer._thread is not first
    writer.close()
