"""Delivery tracking: provider webhooks verified and recorded, and the suppression list.

Importing the package registers its job types and its `suppressions` CLI command.
"""

from jobs.email.tracking import actors as actors
from jobs.email.tracking import cli as cli
