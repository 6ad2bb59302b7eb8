"""Push: the internal `push.send` job, sending through Firebase Cloud Messaging HTTP v1."""

from jobs.push import actors as actors
