"""Email: the `email.send` job, templates, message building and providers."""

from jobs.email import actors as actors
from jobs.email import cli as cli
from jobs.email import template_jobs as template_jobs
