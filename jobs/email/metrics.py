"""Metrics of email delivery."""

from __future__ import annotations

from prometheus_client import Counter

SENT = Counter("taskmaster_emails_sent_total", "Emails handed to a provider", ["provider"])
REJECTED = Counter("taskmaster_emails_rejected_total", "Emails a provider refused for good", ["provider"])
FAILOVERS = Counter(
    "taskmaster_email_failovers_total", "Emails passed on to the next provider", ["provider", "reason"]
)
UNKNOWN_OUTCOME_FAILOVERS = Counter(
    "taskmaster_email_unknown_outcome_failovers_total",
    "Failovers after a timeout that the provider may have accepted (possible duplicates)",
    ["provider"],
)
