"""Polling with a deadline, instead of fixed sleeps."""

import time


def wait_until(predicate, timeout=30, interval=0.05):
    """True as soon as predicate() is true, False once timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
