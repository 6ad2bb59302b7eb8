"""Email: the `email.send` job, its message building and its providers."""

from jobs.email import actors as actors
