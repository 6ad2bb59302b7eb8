"""Rate-limit decisions per second: our batched GCRA limiter against the `limits` library.

Both are driven by the same threads of one process, asking for single decisions as fast as they
can, in the same run, against a Redis server this script starts on a free loopback port. The
baseline is `limits`' Redis moving-window limiter (MovingWindowRateLimiter over RedisStorage,
one Lua round trip per decision). Ours is RateLimiter(RedisBackend) with batching on; it is
also run with batching off, to show what the batching buys. The contenders take turns in short
rounds, so a change in the machine's load during the run weighs on all of them alike.

Two scenarios:
  hit:     one key, 500 an hour: the limit is reached within the first round and most
           decisions refuse; over-admission = admitted beyond what the limit allows (goal: 0);
  spread:  10,000 user keys, 1,000 an hour each: nearly every decision admits and writes.

Prints decisions/s of each, the ratio ours/limits (goal: >= 2x) and the over-admission of each,
with the CPU time each decision cost this process and the Redis server: on a machine busy with
other work the rates swing with its load, the CPU per decision much less.
Usage: python benchmarks/ratelimit.py [--seconds 3] [--rounds 3] [--threads 8]
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.redis_server import RedisServer  # noqa: E402
from worker.keys import Keys  # noqa: E402
from worker.ratelimit import RateLimiter, RedisBackend, Rule  # noqa: E402

PERIOD_S = 3600.0


@dataclass(frozen=True)
class Scenario:
    name: str
    limit: int
    users: int


SCENARIOS = (Scenario("hit", limit=500, users=1), Scenario("spread", limit=1000, users=10_000))


@dataclass
class Contender:
    """A limiter under test: ``decide(key)`` admits one delivery or not; ``allowed(elapsed_s)``
    is the most its algorithm may admit on one key over that long."""

    label: str
    decide: Callable[[str], bool]
    allowed: Callable[[float], int]
    decisions: int = 0
    busy_s: float = 0.0
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    admitted: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.decisions / self.busy_s


def server_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def drive(contender: Contender, server: redis.Redis, users: int, threads: int, seconds: float) -> None:
    """Run ``threads`` threads deciding for ``seconds``; add up decisions, admissions, CPU."""
    start, stop, lock = threading.Barrier(threads + 1), threading.Event(), threading.Lock()

    def run(seed: int) -> None:
        rng = random.Random(seed)
        mine, count = Counter[str](), 0
        start.wait()
        while not stop.is_set():
            key = f"user-{rng.randrange(users)}"
            if contender.decide(key):
                mine[key] += 1
            count += 1
        with lock:
            contender.decisions += count
            contender.admitted.update(mine)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    cpu_before_s, server_before_s = time.process_time(), server_cpu_s(server)
    start.wait()
    began = time.monotonic()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    contender.busy_s += time.monotonic() - began
    contender.client_cpu_s += time.process_time() - cpu_before_s
    contender.server_cpu_s += server_cpu_s(server) - server_before_s


def ours(url: str, scenario: Scenario, *, batch: bool) -> Contender:
    client = redis.Redis.from_url(url)
    limiter = RateLimiter(RedisBackend(client, Keys(f"bench-{batch}")), batch=batch)
    rule = Rule(limit=scenario.limit, period_s=PERIOD_S)
    return Contender(
        label=f"ours, batching {'on' if batch else 'off'}",
        decide=lambda key: limiter.acquire([(key, rule)]).allowed,
        # GCRA: a full bucket, plus what refills while the run lasts.
        allowed=lambda elapsed_s: rule.capacity + math.floor(elapsed_s * scenario.limit / PERIOD_S),
    )


def baseline(url: str, scenario: Scenario) -> Contender:
    limiter = MovingWindowRateLimiter(storage_from_string(url))
    item = parse(f"{scenario.limit}/hour")
    return Contender(
        label="limits MovingWindowRateLimiter",
        decide=lambda key: limiter.hit(item, key),
        # Moving window: at most the limit within any period; the run is shorter than one.
        allowed=lambda _elapsed_s: scenario.limit,
    )


def run_scenario(url: str, scenario: Scenario, args: argparse.Namespace) -> None:
    server = redis.Redis.from_url(url)
    server.flushall()
    contenders = [baseline(url, scenario), ours(url, scenario, batch=False), ours(url, scenario, batch=True)]
    began = time.monotonic()
    for _ in range(args.rounds):
        for contender in contenders:
            drive(contender, server, scenario.users, args.threads, args.seconds / args.rounds)
    elapsed_s = time.monotonic() - began
    print(f"\nscenario {scenario.name}: {scenario.users} key(s), {scenario.limit} an hour each")
    for contender in contenders:
        bound = contender.allowed(elapsed_s)
        over = sum(max(0, count - bound) for count in contender.admitted.values())
        client_us = contender.client_cpu_s / contender.decisions * 1e6
        server_us = contender.server_cpu_s / contender.decisions * 1e6
        print(
            f"  {contender.label:31s} {contender.rate:7.0f} decisions/s"
            f"  CPU/decision: client {client_us:5.1f} us, Redis {server_us:5.1f} us"
            f"  admitted {sum(contender.admitted.values())} (most per key allowed {bound})"
            f"  over-admitted {over} (goal 0)"
        )
    print(
        f"  ratio ours (batching on) / limits: {contenders[2].rate / contenders[0].rate:.2f}x  (goal >= 2x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="per contender and scenario")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tmw-ratelimit-"))
    server = RedisServer(work / "redis")
    server.start()
    try:
        print(f"threads={args.threads}, {args.seconds} s per contender in {args.rounds} rounds, one process")
        for scenario in SCENARIOS:
            run_scenario(server.url, scenario, args)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
