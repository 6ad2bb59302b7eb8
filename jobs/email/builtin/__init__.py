"""The built-in email templates, used when no stored template of the same name exists.

Each template is three files here: ``NAME.subject.txt``, ``NAME.html`` and ``NAME.txt``.
A `template.upsert` of the same name replaces a built-in one (stored templates win).

``digest``: a notification digest, items grouped by category (alphabetically), newest first
within each, with counts, times shown in the user's time zone::

    {
      "items": [                                  # required, one per notification
        {"category": "task_due",                  # required; shown as "Task due"
         "title": "Send the Q3 report",           # required
         "at": "2026-07-14T12:30:00Z",            # required, ISO 8601 (no offset: UTC)
         "body": "Due today at 17:00",            # optional
         "url": "https://app.example.com/t/42"}   # optional: the title links to it
      ],
      "timezone": "Europe/Berlin",                # optional IANA zone, default UTC
      "user_name": "Ada",                         # optional, default "there"
      "manage_url": "https://app.example.com/settings/notifications"   # optional
    }

``system``: a plain system message::

    {
      "title": "Scheduled maintenance",           # required: the subject and the heading
      "message": "First paragraph.\\n\\nSecond.",  # required, plain text; blank lines part paragraphs
      "action_url": "https://status.example.com", # optional: a button or link
      "action_label": "See the status page"       # optional, default "Open"
    }
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from jobs.email.templating import TemplateSource

NAMES = ("digest", "system")


@cache
def load(name: str) -> TemplateSource | None:
    """The built-in template ``name`` as version 0, or None when there is none."""
    if name not in NAMES:
        return None
    folder = files(__name__)
    return TemplateSource(
        name=name,
        version=0,
        # The file's final newline is no part of the subject.
        subject=folder.joinpath(f"{name}.subject.txt").read_text(encoding="utf-8").strip(),
        html=folder.joinpath(f"{name}.html").read_text(encoding="utf-8"),
        text=folder.joinpath(f"{name}.txt").read_text(encoding="utf-8"),
    )
