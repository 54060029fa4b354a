"""Per-credential sending limits: messages per minute, hour and day, and
bytes per hour and day, counted in fixed windows.

A message is counted when it is accepted. Counting adds first and takes the
message back out when a limit is passed, so two gateway processes racing for
the last slot cannot both take it.
"""

import time
from dataclasses import dataclass

MINUTE, HOUR, DAY = 60, 3600, 86400


@dataclass(frozen=True)
class Limit:
    what: str  # "messages" or "bytes"
    window: int  # seconds
    maximum: int  # 0: no limit

    @property
    def name(self):
        per = {MINUTE: "minute", HOUR: "hour", DAY: "day"}[self.window]
        return f"{self.maximum} {self.what} per {per}"


def credential_limits(credential, defaults):
    """The limits of a credential; an empty field means the platform default
    (defaults maps field name to value; 0 means no limit)."""
    fields = [
        ("messages", MINUTE, "messages_per_minute"),
        ("messages", HOUR, "messages_per_hour"),
        ("messages", DAY, "messages_per_day"),
        ("bytes", HOUR, "bytes_per_hour"),
        ("bytes", DAY, "bytes_per_day"),
    ]
    limits = []
    for what, window, field in fields:
        value = getattr(credential, field)
        maximum = defaults.get(field, 0) if value is None else value
        if maximum:
            limits.append(Limit(what, window, maximum))
    return tuple(limits)


def _key(credential_id, limit, now):
    start = int(now // limit.window) * limit.window
    return f"rate:{credential_id}:{limit.what}:{limit.window}:{start}"


def _retry_after(limit, now):
    return int(limit.window - now % limit.window) + 1


def _amount(limit, size):
    return 1 if limit.what == "messages" else size


def _amounts(credential_id, limits, size, now, sign):
    return [
        (
            _key(credential_id, limit, now),
            sign * _amount(limit, size),
            limit.window + 60,
        )
        for limit in limits
    ]


def full_limit(counters, credential_id, limits, size=0):
    """The first limit that one more message of this size would pass, with
    the seconds until its window ends, or None. Counts nothing."""
    now = time.time()
    totals = counters.get([_key(credential_id, limit, now) for limit in limits])
    for limit, total in zip(limits, totals):
        if total + _amount(limit, size) > limit.maximum:
            return limit, _retry_after(limit, now)
    return None


def count_message(counters, credential_id, limits, size):
    """Count one message; returns (limit, retry_after) and counts nothing
    when that would pass a limit, else None."""
    if not limits:
        return None
    now = time.time()
    totals = counters.add(_amounts(credential_id, limits, size, now, sign=1))
    for limit, total in zip(limits, totals):
        if total > limit.maximum:
            counters.add(_amounts(credential_id, limits, size, now, sign=-1))
            return limit, _retry_after(limit, now)
    return None


def uncount_message(counters, credential_id, limits, size):
    """Take back a message counted by count_message that was not stored."""
    if limits:
        counters.add(_amounts(credential_id, limits, size, time.time(), sign=-1))
