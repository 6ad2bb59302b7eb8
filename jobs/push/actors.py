"""The internal `push.send` job: a notification to every device of a user, through FCM."""

from __future__ import annotations

from jobs.push.config import check_credentials_file, fcm_config
from jobs.push.errors import PushUnavailable
from jobs.push.models import PushSend
from worker.context import JobContext
from worker.errors import ConfigError, PermanentError
from worker.registry import job, settings_check
from worker.settings import Settings


@settings_check
def check_push_settings(settings: Settings) -> None:
    """Refuse a named FCM key file that is missing or not a service account key."""
    check_credentials_file(settings)


@job("push.send", PushSend, queue="default", queues=("urgent",), public=False)
def send_push(ctx: JobContext, push: PushSend) -> None:
    """Send to each device of the user; report each one; retry only the devices not settled."""
    # Imported here: google-auth and requests cost every process ~15 MB, and only the worker
    # processes that send pushes need them (the intake only validates PushSend).
    from jobs.push.delivery import deliver, retry_if_needed
    from jobs.push.devices import registered_devices
    from jobs.push.fcm import client_for

    try:
        client = client_for(fcm_config(ctx.runtime.settings))
    except (PushUnavailable, ConfigError) as exc:
        raise PermanentError(f"push channel unavailable: {exc}") from exc
    devices = registered_devices(ctx.runtime.db, push.user_id)
    if not devices:
        reason = "user_erased" if devices is None else "no_devices"
        ctx.emit(
            "push.skipped",
            {"user_id": push.user_id, "notification_id": push.notification_id, "reason": reason},
        )
        return
    retry_if_needed(deliver(ctx, push, client, devices))
