"""Metrics of the notification sending side (Prometheus)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RECEIVED = Counter("taskmaster_notifications_received_total", "notification.send jobs decided", ["priority"])
DECISIONS = Counter(
    "taskmaster_notification_decisions_total",
    "Per-channel outcomes of notifications: delivered, deferred, suppressed, cancelled, by reason",
    ["channel", "outcome", "reason"],
)
# The batching ratio is DELIVERIES / DELIVERED_NOTIFICATIONS.
DELIVERIES = Counter(
    "taskmaster_notification_deliveries_total", "Messages handed to a channel", ["channel", "digest"]
)
DELIVERED_NOTIFICATIONS = Counter(
    "taskmaster_notification_delivered_items_total", "Notifications those messages carried", ["channel"]
)
DECISION_SECONDS = Histogram(
    "taskmaster_notification_decision_seconds",
    "Time to decide a notification on every channel, Redis reads included",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
RATE_LIMIT_DELAYS = Counter(
    "taskmaster_notification_rate_limit_delays_total", "Deliveries delayed by a rate limit", ["channel"]
)
RATE_LIMIT_DELAY_SECONDS = Histogram(
    "taskmaster_notification_rate_limit_delay_seconds",
    "How long a rate limit delayed a delivery",
    buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0),
)
