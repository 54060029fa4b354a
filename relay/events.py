"""A message's history: each state change as an event row and a log line."""

import logging

from relay.models import MessageEvent

log = logging.getLogger("postern.pipeline")


def record(message, kind, detail=""):
    record_all([(message, kind, detail)])


def record_all(events):
    """Write events, each (message, kind, detail), in one insert."""
    MessageEvent.objects.bulk_create(
        MessageEvent(message=message, kind=kind, detail=detail)
        for message, kind, detail in events
    )
    for message, kind, detail in events:
        log.info("event=%s queue_id=%s %s", kind, message.queue_id, detail)
