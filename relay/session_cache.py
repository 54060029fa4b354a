"""Outbound SMTP sessions kept open between the delivery runs of one worker
process.

Within one run, a burst already shares a session. Between runs, a steady
trickle of mail to the same destination would otherwise pay for a new
connection, EHLO and TLS handshake for every message. A session that a run
ends cleanly waits here, per (domain, tenant), for at most
DELIVERY_SESSION_IDLE seconds; a run for the same destination takes it
instead of routing and connecting again. A waiting session holds no
connection slot: idle sessions can exceed a destination's connection limit
by one per worker process, for that long at most.
"""

import threading
import time

from django.conf import settings

_idle = {}  # (domain, tenant_id) -> (session, leg, since)
_lock = threading.Lock()
_reaper = None


def take(domain, tenant_id):
    """(session, leg) of a session waiting for this destination, or None."""
    with _lock:
        entry = _idle.pop((domain, tenant_id), None)
    if entry is None:
        return None
    session, leg, since = entry
    if time.monotonic() - since > settings.DELIVERY_SESSION_IDLE:
        # On the delivery path: no QUIT, whose reply could keep it waiting.
        session.abandon()
        return None
    return session, leg


def keep(domain, tenant_id, session, leg):
    """Let the session wait for the next run to this destination, or close it
    when sessions are not kept."""
    if settings.DELIVERY_SESSION_IDLE <= 0:
        session.close()
        return
    with _lock:
        replaced = _idle.pop((domain, tenant_id), None)
        _idle[domain, tenant_id] = (session, leg, time.monotonic())
    if replaced is not None:
        replaced[0].close()
    _start_reaper()


def close_idle(older_than=None):
    """Close the sessions that have waited longer than older_than seconds
    (all of them when None)."""
    now = time.monotonic()
    with _lock:
        expired = [
            key for key, (_, _, since) in _idle.items()
            if older_than is None or now - since > older_than
        ]
        closing = [_idle.pop(key) for key in expired]
    for session, _, _ in closing:
        session.close()


def _start_reaper():
    # Started in the process that keeps sessions (a worker process, after
    # the fork), so that a session nobody takes is closed in time and not
    # when the remote server gives up on it.
    global _reaper
    with _lock:
        if _reaper is not None and _reaper.is_alive():
            return
        _reaper = threading.Thread(target=_reap, name="session-reaper", daemon=True)
        _reaper.start()


def _reap():
    while True:
        time.sleep(max(0.2, settings.DELIVERY_SESSION_IDLE / 2))
        close_idle(older_than=settings.DELIVERY_SESSION_IDLE)
