"""Notifications: users and their preferences, the decision per channel, digests, delivery."""

from jobs.notifications import actors as actors
from jobs.notifications import cli as cli
from jobs.notifications import retention as retention
from jobs.notifications import users as users
