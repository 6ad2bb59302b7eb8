"""The scheduler: fires the entries of schedules.yaml; only the elected leader fires.

config.py loads and validates the file, timing.py computes fire times, planner.py decides
what is due or missed, leader.py holds the leader lock, firing.py enqueues one fire, state.py
and status.py keep what Redis remembers, service.py runs it all on a thread.
"""

from worker.scheduler.config import DEFAULT_MISFIRE_GRACE_S, Entry, Schedule, load_schedule, parse_schedule
from worker.scheduler.service import Scheduler

__all__ = ["DEFAULT_MISFIRE_GRACE_S", "Entry", "Schedule", "Scheduler", "load_schedule", "parse_schedule"]
