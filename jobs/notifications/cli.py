"""`taskmaster-worker explain '<notification.send json>'`: what would happen on each channel, and why.

The same `decide` as the daemon, fed with the user's profile from the database and, when Redis
answers, the open digests and cap counters there. Nothing is sent, held or counted.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

import redis
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from jobs.notifications.decision import Counters, DigestRules, OpenDigest
from jobs.notifications.explain import explain
from jobs.notifications.keys import NotifKeys
from jobs.notifications.models import Channel, NotificationSend
from jobs.notifications.profiles import Profile, load_profile
from jobs.notifications.state import NotifState
from worker.cli.common import EXIT_OK, EXIT_UNAVAILABLE, die, settings_or_exit
from worker.db.session import make_engine
from worker.redis_conn import connect, redis_url
from worker.registry import cli_command
from worker.settings import Settings

EPILOG = """\
example:
  taskmaster-worker explain '{"user_id": "u1", "category": "task.reminder", "title": "Report due"}'

exit status:
  0  explained
  1  invalid notification, or the user is not known
  2  invalid configuration
  3  the database could not be reached
"""


@cli_command
def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "explain",
        help="say what a notification would do on each channel, without sending it",
        description="Decide a notification.send as the daemon would, and print the outcome per channel.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("notification", help="the notification.send data, JSON (- reads it from stdin)")
    parser.add_argument("--at", help="decide as at this ISO 8601 time (default: now)")
    parser.set_defaults(func=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    text = sys.stdin.read() if args.notification == "-" else args.notification
    try:
        notification = NotificationSend.model_validate_json(text)
    except ValidationError as exc:
        die(f"invalid notification: {exc}")
    now = _when(args.at)
    for line in explain_lines(settings, notification, now):
        print(line)
    return EXIT_OK


def explain_lines(settings: Settings, notification: NotificationSend, now: datetime) -> list[str]:
    """The lines `explain` prints."""
    engine = make_engine(settings.sqlalchemy_url)
    try:
        profile = load_profile(engine, notification.user_id)
    except SQLAlchemyError as exc:
        die(f"the database could not be reached: {type(exc).__name__}", EXIT_UNAVAILABLE)
    finally:
        engine.dispose()
    if profile is None:
        die(f"user {notification.user_id!r} is not known (no user.upsert yet)")
    counters, digests = _redis_state(settings, notification, profile, now)
    found = explain(
        notification,
        profile.preferences,
        profile.timezone,
        now,
        counters,
        digests,
        DigestRules.from_settings(settings),
    )
    head = f"{notification.priority} notification for {notification.user_id} ({profile.timezone.key}), "
    head += f"at {now.astimezone(profile.timezone):%Y-%m-%d %H:%M %Z}:"
    return [head, *(f"  {e.line()}" for e in found)]


def _redis_state(
    settings: Settings, notification: NotificationSend, profile: Profile, now: datetime
) -> tuple[dict[Channel, Counters], dict[Channel, OpenDigest]]:
    """Open digests and cap counters, read only; empty when Redis does not answer."""
    counters: dict[Channel, Counters] = {}
    digests: dict[Channel, OpenDigest] = {}
    try:
        client = connect(redis_url(settings))
    except (redis.RedisError, OSError, ValueError):  # explain works without Redis, less precisely
        return counters, digests
    try:
        state = NotifState(client, NotifKeys(settings.redis_prefix))
        caps = profile.preferences.caps
        for channel in notification.wanted_channels():
            if caps.per_hour or caps.per_day:
                counters[channel] = state.caps(notification.user_id, channel, caps, now, mode="peek").counters
            opened = state.open_digest(state.keys.batch(notification.user_id, channel))
            if opened is not None:
                digests[channel] = opened
    except redis.RedisError:
        return {}, {}
    finally:
        client.close()
    return counters, digests


def _when(at: str | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(at)
    except ValueError:
        die(f"--at: expected an ISO 8601 time, got {at!r}")
    if parsed.tzinfo is None:
        die("--at: give a time with its offset, such as 2026-03-29T23:30:00+02:00")
    return parsed
