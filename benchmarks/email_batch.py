"""Batch email speed: recipients/s through the email.send_batch handler to Postmark's batch endpoint.

Each job carries 1,000 emails of one recipient. The handler runs in this process, end to end:
data validation, rendering, delivery records in a migrated SQLite, the failover chain (rate limit
and breaker in Redis), Postmark's fake answering every request after 50 ms, outcomes recorded and
events published. Baseline, measured in the same run with the same threads: the Postmark client
alone handing the same number of prebuilt messages to the same fake. Goal: >= 2,000 recipients/s.

Usage: python benchmarks/email_batch.py [--jobs 8] [--threads 1,4]
Only loopback is used: a Redis server of its own and the Postmark fake on a free port.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from jobs.email.batch import EmailBatch, send_email_batch  # noqa: E402
from jobs.email.message import build_message, stable_message_id  # noqa: E402
from jobs.email.models import EmailSend  # noqa: E402
from jobs.email.providers.base import BatchItem  # noqa: E402
from jobs.email.providers.postmark import PostmarkProvider  # noqa: E402
from tests.fakes.postmark import FakePostmark  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from worker.context import JobContext  # noqa: E402
from worker.db import migrate  # noqa: E402
from worker.events import JobRef  # noqa: E402
from worker.registry import load_job_modules  # noqa: E402
from worker.runtime import Runtime  # noqa: E402
from worker.settings import load_settings  # noqa: E402

LATENCY_S = 0.05
EMAILS_PER_JOB = 1000
GOAL_PER_S = 2000
SENDER = "TaskMaster Pro <notifications@mail.taskmaster-pro.com>"
TEXT = "Your daily digest.\n" * 10


def prompt(fake: FakePostmark) -> FakePostmark:
    """TCP_NODELAY on the fake's connections, as a real API front end has: tests/fakes/http.py
    writes headers and body apart, and Nagle's algorithm would hold the body for the client's
    delayed ACK (up to 40 ms on Linux) on every answer of a kept-alive connection but the first."""
    handler = fake._server.RequestHandlerClass
    fake._server.RequestHandlerClass = type("PromptHandler", (handler,), {"disable_nagle_algorithm": True})
    return fake


def serve_fake(urls: Queue[str], stop: EventType, accepted: Queue[int]) -> None:
    """The Postmark fake in a process of its own, so that its CPU does not compete with the job's."""
    with prompt(FakePostmark(delay_s=LATENCY_S)) as fake:
        urls.put(fake.base_url)
        stop.wait()
        accepted.put(len(fake.accepted))


def job_data(job: int) -> dict[str, Any]:
    return {
        "emails": [
            {
                "key": f"bench-{job}-{n}",
                "to": f"reader+{job}.{n}@example.com",
                "subject": "Digest",
                "text": TEXT,
            }
            for n in range(EMAILS_PER_JOB)
        ]
    }


def prebuilt(job: int) -> list[BatchItem]:
    items = []
    for n in range(EMAILS_PER_JOB):
        key = f"base-{job}-{n}"
        email = EmailSend.model_validate(
            {"to": f"reader+{job}.{n}@example.com", "subject": "Digest", "text": TEXT}
        )
        message = build_message(
            email, sender=SENDER, message_id=stable_message_id(key), date=datetime.now(UTC)
        )
        items.append(BatchItem(message, key, list(email.to)))
    return items


def timed(threads: int, jobs: int, run: Callable[[int], None]) -> float:
    """Recipients per second running ``run(job)`` for every job on ``threads`` threads."""
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, range(jobs)))
    return jobs * EMAILS_PER_JOB / (time.perf_counter() - started)


def provider_alone(client: PostmarkProvider, items: dict[int, list[BatchItem]], first: int, job: int) -> None:
    results = client.send_batch(items[first + job])
    assert all(not isinstance(r, Exception) for r in results)


def run_job(runtime: Runtime, first: int, job: int) -> None:
    """One email.send_batch job through its handler, as the broker calls it: validate, then handle."""
    job_id = f"bench-{first + job}"
    ctx = JobContext(runtime, JobRef("email.send_batch", job_id, None), int(time.time() * 1000), 0, job_id)
    send_email_batch(ctx, EmailBatch.model_validate(job_data(first + job)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--threads", default="1,4")
    args = parser.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        redis_server = RedisServer(Path(tmp) / "redis")
        redis_server.start()
        data_dir = Path(tmp) / "var"
        data_dir.mkdir()
        migrate.upgrade(f"sqlite:///{data_dir / 'taskmaster.db'}")
        context = multiprocessing.get_context("spawn")
        urls: Queue[str] = context.Queue()
        counts: Queue[int] = context.Queue()
        stop = context.Event()
        server = context.Process(target=serve_fake, args=(urls, stop, counts), daemon=True)
        server.start()
        base_url = urls.get(timeout=30)
        token = FakePostmark().server_token
        settings = load_settings(
            {
                "TASKMASTER_DATA_DIR": str(data_dir),
                "TASKMASTER_REDIS_URL": redis_server.url,
                "TASKMASTER_SCHEDULES_FILE": str(Path(tmp) / "schedules.yaml"),
                "TASKMASTER_LOG_LEVEL": "warning",
                "TASKMASTER_EMAIL_FROM": SENDER,
                "TASKMASTER_EMAIL_PROVIDERS": "postmark",
                "TASKMASTER_POSTMARK_SERVER_TOKEN": token,
                "TASKMASTER_POSTMARK_BASE_URL": base_url,
                # The account default (50 requests/s) is far above what these runs ask for.
            }
        )
        runtime = Runtime(settings, load_job_modules(settings.job_modules))
        client = PostmarkProvider(token, base_url=base_url, timeout_s=10)
        try:
            print(f"email.send_batch, {EMAILS_PER_JOB} emails a job, Postmark fake answering after "
                  f"{LATENCY_S * 1000:.0f} ms, {args.jobs} jobs a run")  # fmt: skip
            for round_no, threads in enumerate(thread_counts, start=1):
                first = round_no * 10_000
                items = {first + job: prebuilt(first + job) for job in range(args.jobs)}
                baseline = timed(threads, args.jobs, partial(provider_alone, client, items, first))
                cpu_started = time.process_time()
                measured = timed(threads, args.jobs, partial(run_job, runtime, first + 1000))
                cpu_ms = (time.process_time() - cpu_started) * 1000 / (args.jobs * EMAILS_PER_JOB)
                verdict = "ok" if measured >= GOAL_PER_S else "BELOW GOAL"
                print(
                    f"  {threads} thread(s): {measured:,.0f} recipients/s through the job "
                    f"(goal >= {GOAL_PER_S:,}: {verdict}); provider client alone {baseline:,.0f}/s; "
                    f"ratio {measured / baseline:.2f}; CPU of the job's process {cpu_ms:.2f} ms/email"
                )
            started = time.perf_counter()
            prebuilt(0)
            build_ms = (time.perf_counter() - started) * 1000 / EMAILS_PER_JOB
            print(f"  of which validating and building one message: {build_ms:.2f} ms/email")
            stop.set()
            accepted = counts.get(timeout=30)
            expected = 2 * args.jobs * EMAILS_PER_JOB * len(thread_counts)
            print(f"  the fake accepted {accepted:,} emails (expected {expected:,})")
        finally:
            client.close()
            runtime.close()
            stop.set()
            server.join(timeout=10)
            redis_server.stop()


if __name__ == "__main__":
    main()
