"""Notifications: users, preferences, the delivery decision, digests and their explanation.

The decision logic here is pure (no Redis, no SQL, no clock of its own); actors come later.
"""
