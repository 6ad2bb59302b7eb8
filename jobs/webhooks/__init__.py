"""Signed outbound webhooks (Standard Webhooks): endpoints, fan-out, delivery with retries.

``enqueue_delivery`` is the entry point of the notifications capability.
"""

from jobs.webhooks import actors as actors
from jobs.webhooks.delivery import enqueue_delivery as enqueue_delivery
