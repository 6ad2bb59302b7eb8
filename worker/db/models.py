"""Every table of the durable state, from the modules that define them by area.

Import models from here; importing this module also registers every table on
``Base.metadata``, which migrations compare against.
"""

from __future__ import annotations

from worker.db.base import Base
from worker.db.connections import CalendarSync, Contact, OAuthConnection
from worker.db.messaging import (
    DELIVERY_STATUSES,
    Campaign,
    EmailDelivery,
    EmailTemplate,
    NotificationLog,
    WebhookEndpoint,
)
from worker.db.notifications import NotificationDailyCount as NotificationDailyCount
from worker.db.planning import CalendarEvent, Conflict, FocusBlock, Insight, ProductivityPattern, Task
from worker.db.tracking import ProviderEvent as ProviderEvent
from worker.db.tracking import Suppression as Suppression
from worker.db.users import Preferences, PushToken, User

__all__ = [
    "DELIVERY_STATUSES",
    "Base",
    "CalendarEvent",
    "CalendarSync",
    "Campaign",
    "Conflict",
    "Contact",
    "EmailDelivery",
    "EmailTemplate",
    "FocusBlock",
    "Insight",
    "NotificationLog",
    "OAuthConnection",
    "Preferences",
    "ProductivityPattern",
    "PushToken",
    "Task",
    "User",
    "WebhookEndpoint",
]
