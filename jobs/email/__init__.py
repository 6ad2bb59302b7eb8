"""Email: the `email.send` job, templates, providers, delivery tracking and suppressions."""

from jobs.email import actors as actors
from jobs.email import batch as batch
from jobs.email import cli as cli
from jobs.email import template_jobs as template_jobs
from jobs.email import tracking as tracking
