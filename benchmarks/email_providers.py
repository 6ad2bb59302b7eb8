"""Email delivery speed: the real email.send path against providers answering after 50 ms.

Prints, from one run on one machine, each figure with its goal:
  1. emails/s through the daemon (XADD intake -> email.send -> provider fake), 2 worker processes,
     for Postmark (one kept-alive connection per thread) and SendGrid (the official library opens
     a connection per request), at each TASKMASTER_THREADS given; baseline: the provider client
     alone with the same processes and threads, measured in the same run (goal: >= 300/s);
  2. recipients/s through Postmark's batch endpoint, 500 emails per request, from a few threads
     (goal: >= 2,000/s);
  3. CPU per email (time.process_time): building + outbox send, against rendering a template +
     building + a provider send to a fake answering at once (the fake runs in another process, so
     only the sender's CPU is counted);
  4. failover: SendGrid answering 503 mid-run: time from its first failed call to Postmark's first
     accepted email (goal < 1 s) and failed calls before its breaker opened (goal < 20).

Usage: python benchmarks/email_providers.py [--emails 3000] [--threads 8,16,32,64] [--processes 2]
Only loopback is used: a Redis server of its own, the fakes of tests/fakes/ on free ports.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from jobs.email.message import build_message, stable_message_id  # noqa: E402
from jobs.email.models import EmailSend  # noqa: E402
from jobs.email.providers.base import BatchItem, Provider  # noqa: E402
from jobs.email.providers.errors import ProviderError  # noqa: E402
from jobs.email.providers.outbox import OutboxProvider  # noqa: E402
from jobs.email.providers.postmark import PostmarkProvider  # noqa: E402
from jobs.email.providers.sendgrid import SendGridProvider  # noqa: E402
from jobs.email.template_store import find_template  # noqa: E402
from jobs.email.templating import render  # noqa: E402
from tests.daemon import Daemon, children_of, daemon_env  # noqa: E402
from tests.fakes.http import FakeHTTPServer, Reply, Request  # noqa: E402
from tests.fakes.postmark import FakePostmark  # noqa: E402
from tests.fakes.sendgrid import FakeSendGrid  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from worker.breaker import breaker_states  # noqa: E402

LATENCY_S = 0.05
SENDER = "TaskMaster Pro <notifications@mail.taskmaster-pro.com>"
DATA = {"subject": "Benchmark", "text": "Hello from the benchmark.\n" * 10}
SYSTEM_VARIABLES = {
    "title": "Scheduled maintenance",
    "message": "We will be down for ten minutes.\n\nNothing to do on your side.",
    "action_url": "https://status.example.com",
    "action_label": "See the status page",
}
FAKES: dict[str, Callable[..., FakeHTTPServer]] = {"postmark": FakePostmark, "sendgrid": FakeSendGrid}
F = TypeVar("F", bound=FakeHTTPServer)


def prompt(fake: F) -> F:
    """The fake with TCP_NODELAY and a long listen backlog, as a real API's front end has.

    tests/fakes/http.py writes an answer's headers and body in two writes; with Nagle's algorithm
    on, the body waits for the client's delayed ACK of the headers, up to 40 ms on Linux, on every
    answer but the first of a kept-alive connection (measured: 42 ms a request instead of 0.8 ms).
    That would add 40 ms to Postmark's 50 and nothing to SendGrid's, whose library reconnects.
    """
    handler = cast(type, fake._server.RequestHandlerClass)
    fake._server.RequestHandlerClass = type("PromptHandler", (handler,), {"disable_nagle_algorithm": True})
    # socketserver listens with a backlog of 5: a hundred clients connecting at once (SendGrid's
    # library connects for every email) would be reset. Listening again sets a new backlog.
    fake._server.socket.listen(1024)
    return fake


def secret_of(fake: FakeHTTPServer) -> str:
    """The credential ``fake`` accepts: Postmark's server token or SendGrid's API key."""
    if isinstance(fake, FakePostmark):
        return fake.server_token
    assert isinstance(fake, FakeSendGrid)
    return fake.api_key


def provider_env(name: str, fake: FakeHTTPServer) -> dict[str, str]:
    """Settings pointing the daemon at ``fake``; rate limits out of the way (the defaults, 50/s for
    Postmark and 100/s for SendGrid, are the accounts' limits and would cap the figures)."""
    secret = "POSTMARK_SERVER_TOKEN" if name == "postmark" else "SENDGRID_API_KEY"
    return {
        f"TASKMASTER_{secret}": secret_of(fake),
        f"TASKMASTER_{name.upper()}_BASE_URL": fake.base_url,
        f"TASKMASTER_{name.upper()}_RATE_PER_S": "100000",
    }


def client(name: str, base_url: str, secret: str) -> Provider:
    """The daemon's own client of provider ``name``."""
    if name == "postmark":
        return PostmarkProvider(secret, base_url=base_url, timeout_s=30)
    return SendGridProvider(secret, base_url=base_url, timeout_s=30)


def message(n: int, data: dict[str, Any] | None = None) -> BatchItem:
    email = EmailSend.model_validate({"to": f"someone+{n}@example.com", **(data or DATA)})
    key = f"id:bench-{n}"
    built = build_message(email, sender=SENDER, message_id=stable_message_id(key), date=datetime.now(UTC))
    return BatchItem(built, key, list(email.to))


def accepted(fake: FakeHTTPServer) -> int:
    return len(fake.accepted) if isinstance(fake, FakePostmark | FakeSendGrid) else 0


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.002)
    return time.monotonic()


def submit(client: redis.Redis, prefix: str, first: int, count: int) -> None:
    pipe = client.pipeline(transaction=False)
    for n in range(first, first + count):
        job = {
            "type": "email.send",
            "id": f"{prefix}-{n}",
            "data": {"to": f"someone+{n}@example.com", **DATA},
        }
        pipe.xadd("taskmaster:intake", {"job": json.dumps(job)})
        if n % 100 == 99:
            pipe.execute()
    pipe.execute()


@contextmanager
def daemon(
    server: RedisServer, work: Path, processes: int, threads: int, **settings: str
) -> Iterator[Daemon]:
    redis.Redis.from_url(server.url).flushall()
    data_dir = work / f"daemon-{time.monotonic_ns()}" / "var"
    env = daemon_env(
        data_dir,
        server.url,
        TASKMASTER_PROCESSES=str(processes),
        TASKMASTER_THREADS=str(threads),
        TASKMASTER_LOG_LEVEL="error",
        TASKMASTER_EMAIL_FROM=SENDER,
        **settings,
    )
    running = Daemon(env, data_dir.parent).start()
    try:
        yield running
    finally:
        running.stop()


# ---------------------------------------------------------------------------- 1. emails/s


@dataclass(frozen=True)
class Throughput:
    emails_per_s: float
    # CPU (user + system) per email: the daemon's processes, Redis, and this process (the fake).
    daemon_cpu_ms: float
    redis_cpu_ms: float
    fake_cpu_ms: float

    @property
    def cpu_ms(self) -> float:
        return self.daemon_cpu_ms + self.redis_cpu_ms + self.fake_cpu_ms


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (Linux /proc)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def process_tree(pid: int) -> list[int]:
    return [pid, *children_of(pid)]


def daemon_rate(
    server: RedisServer, work: Path, name: str, processes: int, threads: int, emails: int
) -> Throughput:
    with prompt(FAKES[name](delay_s=LATENCY_S)) as fake:
        settings = {"TASKMASTER_EMAIL_PROVIDERS": name, **provider_env(name, fake)}
        with daemon(server, work, processes, threads, **settings) as running:
            intake = redis.Redis.from_url(server.url)
            # Warm-up: worker threads build their sender and open their connections.
            warm = processes * threads * 4
            submit(intake, "warm", 0, warm)
            wait_until(lambda: accepted(fake) >= warm, 120, "the warm-up emails")
            assert running.process is not None and server.process is not None
            tree, redis_pid = process_tree(running.process.pid), [server.process.pid]
            cpu_before = (cpu_s(tree), cpu_s(redis_pid), time.process_time())
            started = time.monotonic()
            submit(intake, "run", 0, emails)
            done = wait_until(lambda: accepted(fake) >= warm + emails, 600, f"{emails} emails")
            cpu_after = (cpu_s(tree), cpu_s(redis_pid), time.process_time())
    daemon_ms, redis_ms, fake_ms = (
        (a - b) * 1000 / emails for a, b in zip(cpu_after, cpu_before, strict=True)
    )
    return Throughput(emails / (done - started), daemon_ms, redis_ms, fake_ms)


def _bare_sender(name: str, fake_url: str, secret: str, threads: int, seconds: float, out: Any) -> None:
    """One process of the baseline: ``threads`` threads calling the provider client back to back."""
    provider = client(name, fake_url, secret)
    counts = [0] * threads
    deadline = time.monotonic() + seconds

    def loop(slot: int) -> None:
        n = slot * 1_000_000
        while time.monotonic() < deadline:
            item = message(n)
            try:
                provider.send(
                    item.message, idempotency_key=item.idempotency_key, envelope_to=item.envelope_to
                )
            except ProviderError:
                continue  # counted out: only emails the fake took make the baseline
            counts[slot] += 1
            n += 1

    workers = [threading.Thread(target=loop, args=(slot,)) for slot in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.send(sum(counts))


def bare_rate(name: str, processes: int, threads: int, seconds: float = 4.0) -> float:
    """The provider client alone, same processes and threads, no Redis, SQL or Dramatiq."""
    spawn = multiprocessing.get_context("spawn")
    with prompt(FAKES[name](delay_s=LATENCY_S)) as fake:
        secret = secret_of(fake)
        pipes = [spawn.Pipe(duplex=False) for _ in range(processes)]
        children = [
            spawn.Process(target=_bare_sender, args=(name, fake.base_url, secret, threads, seconds, sender))
            for _, sender in pipes
        ]
        for child in children:
            child.start()
        total = sum(int(receiver.recv()) for receiver, _ in pipes)
        for child in children:
            child.join()
    return total / seconds


# ---------------------------------------------------------------------------- 2. batch recipients/s


def batch_rate(threads: int = 4, requests_per_thread: int = 6, batch: int = 500) -> float:
    items = [message(n) for n in range(batch)]
    with prompt(FakePostmark(delay_s=LATENCY_S)) as fake:
        provider = client("postmark", fake.base_url, fake.server_token)
        provider.send_batch(items[:1])  # open the connection of this thread; nothing measured yet
        failures: list[object] = []

        def loop() -> None:
            for _ in range(requests_per_thread):
                failures.extend(
                    r for r in provider.send_batch(items) if not hasattr(r, "provider_message_id")
                )

        workers = [threading.Thread(target=loop) for _ in range(threads)]
        started = time.monotonic()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.monotonic() - started
        provider.close()
    if failures:
        raise SystemExit(f"{len(failures)} emails of the batches failed: {failures[0]}")
    return threads * requests_per_thread * batch / elapsed


# ---------------------------------------------------------------------------- 3. CPU per email


def _serve_fake(name: str, ready: Any, stop: Any) -> None:
    with prompt(FAKES[name]()) as fake:
        ready.send((fake.base_url, secret_of(fake)))
        stop.wait()


@contextmanager
def fake_elsewhere(name: str) -> Iterator[tuple[str, str]]:
    """A fake answering at once, in a process of its own: its CPU is not the sender's."""
    spawn = multiprocessing.get_context("spawn")
    receiver, sender = spawn.Pipe(duplex=False)
    stop = spawn.Event()
    child = spawn.Process(target=_serve_fake, args=(name, sender, stop))
    child.start()
    try:
        yield receiver.recv()
    finally:
        stop.set()
        child.join(10)


def cpu_per_email_us(work: Path, emails: int = 1000) -> dict[str, float]:
    def measure(one: Callable[[int], object]) -> float:
        for n in range(50):  # warm caches, connections and compiled templates
            one(-n - 1)
        started = time.process_time()
        for n in range(emails):
            one(n)
        return (time.process_time() - started) / emails * 1e6

    outbox = OutboxProvider(work / "cpu-outbox")

    def outbox_send(n: int) -> None:
        item = message(n)
        outbox.send(item.message, idempotency_key=item.idempotency_key, envelope_to=item.envelope_to)

    template = find_template(None, "system")
    assert template is not None
    figures = {"build + outbox send": measure(outbox_send)}
    # Where (b) spends it, part by part.
    figures["  validate + build (in both)"] = measure(message)
    figures["  render the template (in b)"] = measure(lambda n: render(template, SYSTEM_VARIABLES))
    for name in ("postmark", "sendgrid"):
        with fake_elsewhere(name) as (url, secret):
            provider = client(name, url, secret)

            def rendered_send(n: int, provider: Provider = provider) -> None:
                done = render(template, SYSTEM_VARIABLES)
                item = message(n, {"subject": done.subject, "text": done.text, "html": done.html})
                provider.send(
                    item.message, idempotency_key=item.idempotency_key, envelope_to=item.envelope_to
                )

            figures[f"render + build + {name} send"] = measure(rendered_send)
            provider.close()
    return figures


# ---------------------------------------------------------------------------- 4. failover timing


class FailingSendGrid(FakeSendGrid):
    """SendGrid that answers 503 once ``down`` is set, noting when each failed call was answered."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.down = False
        self.failed_at: list[float] = []
        self._times = threading.Lock()

    def handle(self, request: Request) -> Reply:
        if self.down:
            with self._times:
                self.failed_at.append(time.monotonic())
            return self.server_error(503)
        return super().handle(request)


class TimedPostmark(FakePostmark):
    """Postmark noting when it accepted each email."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.accepted_at: list[float] = []
        self._times = threading.Lock()

    def handle(self, request: Request) -> Reply:
        reply = super().handle(request)
        if reply.status == 200:
            with self._times:
                self.accepted_at.append(time.monotonic())
        return reply


def message_ids(fake: FakePostmark | FakeSendGrid) -> list[str]:
    """The Message-ID header of every email ``fake`` accepted."""
    if isinstance(fake, FakePostmark):
        return [
            next((h["Value"] for h in item.payload.get("Headers") or [] if h["Name"] == "Message-ID"), "")
            for item in list(fake.accepted)
        ]
    return [(item.payload.get("headers") or {}).get("Message-ID", "") for item in list(fake.accepted)]


@dataclass(frozen=True)
class FailoverTiming:
    to_postmark_s: float  # SendGrid's first failed call -> Postmark's first accepted email
    failed_before_open: int  # failed SendGrid calls answered before its breaker showed open
    failed_total: int  # failed SendGrid calls in all: the rest had gone out before it opened
    by_sendgrid: int
    by_postmark: int
    duplicates: int
    lost: int


def failover(
    server: RedisServer, work: Path, processes: int, threads: int, rate_per_s: float = 150, seconds: float = 4
) -> FailoverTiming:
    """Steady mail through sendgrid,postmark on the default breaker settings; SendGrid fails mid-run."""
    with (
        prompt(FailingSendGrid(delay_s=LATENCY_S)) as sendgrid,
        prompt(TimedPostmark(delay_s=LATENCY_S)) as postmark,
    ):
        settings = {
            "TASKMASTER_EMAIL_PROVIDERS": "sendgrid,postmark",
            **provider_env("sendgrid", sendgrid),
            **provider_env("postmark", postmark),
        }
        with daemon(server, work, processes, threads, **settings):
            intake = redis.Redis.from_url(server.url)
            opened_at: list[float] = []
            done = threading.Event()

            def watch_breaker() -> None:
                while not done.wait(0.002):
                    if breaker_states(intake, "taskmaster").get("sendgrid") == "open":
                        opened_at.append(time.monotonic())
                        return

            # Warm-up: each worker thread builds its sender and connects before the measured run.
            warm = processes * threads * 4
            submit(intake, "warm", 0, warm)
            wait_until(lambda: accepted(sendgrid) >= warm, 120, "the warm-up emails")
            sendgrid.accepted.clear()
            threading.Thread(target=watch_breaker, daemon=True).start()
            total = int(rate_per_s * seconds)
            started = time.monotonic()
            for n in range(total):
                if n == total // 3:
                    sendgrid.down = True
                time.sleep(max(0.0, started + n / rate_per_s - time.monotonic()))
                submit(intake, "failover", n, 1)
            wait_until(lambda: accepted(sendgrid) + accepted(postmark) >= total, 120, "every email")
            done.set()
    ids = Counter(message_ids(sendgrid) + message_ids(postmark))
    return FailoverTiming(
        to_postmark_s=min(postmark.accepted_at) - min(sendgrid.failed_at),
        failed_before_open=sum(t <= opened_at[0] for t in sendgrid.failed_at) if opened_at else -1,
        failed_total=len(sendgrid.failed_at),
        by_sendgrid=accepted(sendgrid),
        by_postmark=accepted(postmark),
        duplicates=sum(count - 1 for count in ids.values()),
        lost=total - len(ids),
    )


# ---------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--emails", type=int, default=3000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", default="8,16,32,64", help="TASKMASTER_THREADS values to try")
    parser.add_argument("--parts", default="1,2,3,4", help="which measurements to run")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="tmw-email-"))
    server = RedisServer(work / "redis")
    server.start()
    try:
        if "1" in parts:
            print(
                f"1. email.send through the daemon, {args.processes} processes, provider answering in 50 ms"
            )
            for name in ("postmark", "sendgrid"):
                for threads in [int(t) for t in args.threads.split(",")]:
                    ours = daemon_rate(server, work, name, args.processes, threads, args.emails)
                    bare = bare_rate(name, args.processes, threads)
                    ceiling = args.processes * threads / LATENCY_S
                    print(
                        f"   {name:8} threads={threads:3}: {ours.emails_per_s:6.0f} emails/s  (goal >= 300);"
                        f"  bare client {bare:4.0f}/s, ratio {ours.emails_per_s / bare:.2f};"
                        f"  latency ceiling {ceiling:.0f}/s",
                        flush=True,
                    )
                    print(
                        f"   {'':8} CPU per email: daemon {ours.daemon_cpu_ms:.1f} ms,"
                        f" redis {ours.redis_cpu_ms:.1f}, fake {ours.fake_cpu_ms:.1f};"
                        f" CPU ceiling on {cores} cores"
                        f" {cores * 1000 / ours.cpu_ms:.0f}/s",
                        flush=True,
                    )
        if "2" in parts:
            rate = batch_rate()
            print(
                f"2. postmark send_batch, 500 a request, 4 threads: {rate:.0f} recipients/s  (goal >= 2000)"
            )
        if "3" in parts:
            print("3. CPU per email (time.process_time of the sender; the fake runs in another process):")
            figures = cpu_per_email_us(work)
            base = figures["build + outbox send"]
            for label, us in figures.items():
                print(f"   {label:34} {us:7.0f} us  ({us / base:.2f}x the outbox path)")
        if "4" in parts:
            print(
                f"4. failover sendgrid -> postmark, {args.processes} processes of 8 threads, default breaker:"
            )
            timing = failover(server, work, args.processes, 8)
            print(
                f"   first failed call -> first email by postmark: {timing.to_postmark_s:.3f} s  (goal < 1 s)"
            )
            print(
                f"   failed calls to sendgrid before its breaker opened: {timing.failed_before_open}"
                "  (goal < 20)"
            )
            print(
                f"   failed calls in all: {timing.failed_total} (the rest had gone out before it opened);"
                f" sent by sendgrid {timing.by_sendgrid}, by postmark {timing.by_postmark};"
                f" duplicates {timing.duplicates}, lost {timing.lost}  (goal 0, 0)"
            )
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
