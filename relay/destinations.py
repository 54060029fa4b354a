"""Per-destination limits, so that a big receiver is not flooded: open
connections at a time, and messages per minute.

Both are kept in the database rather than in one worker's memory, so that they
hold across all workers on all machines. A destination is a recipient domain.
Known limit: domains that share MX hosts (a large mail provider's customer
domains) are counted apart; counting by MX host would need the route first.
"""

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from relay.models import DestinationPolicy, DestinationRate, DestinationSlot

def slot_lease():
    """A slot held longer than this belongs to a run that died. A session that
    really lasts longer lets one more connection open: an overshoot of the
    limit, never a lost message."""
    return timedelta(seconds=settings.DESTINATION_SLOT_LEASE)


def limits_for(domain):
    policy = DestinationPolicy.objects.filter(domain=domain).first()
    connections = settings.DESTINATION_MAX_CONNECTIONS
    per_minute = settings.DESTINATION_MESSAGES_PER_MINUTE
    if policy and policy.max_connections:
        connections = policy.max_connections
    if policy and policy.messages_per_minute:
        per_minute = policy.messages_per_minute
    return connections, per_minute


def take_slot(domain):
    """A token for one of the destination's connection slots, or None when all
    are in use."""
    connections, _ = limits_for(domain)
    now = timezone.now()
    token = uuid.uuid4()
    for slot in range(connections):
        _ensure_row(DestinationSlot, domain=domain, slot=slot)
        # The conditional update lets only one run take a free (or expired)
        # slot, whatever the number of workers racing for it.
        taken = (
            DestinationSlot.objects.filter(domain=domain, slot=slot)
            .filter(Q(token__isnull=True) | Q(held_until__lt=now))
            .update(token=token, held_until=now + slot_lease())
        )
        if taken:
            return token
    return None


def release_slot(domain, token):
    DestinationSlot.objects.filter(domain=domain, token=token).update(
        token=None, held_until=None
    )


def take_send_permit(domain, per_minute):
    """Count one message to the destination in this minute; False when the
    minute's allowance (per_minute, from limits_for) is used up."""
    if not per_minute:
        return True
    minute = timezone.now().replace(second=0, microsecond=0)
    _ensure_row(DestinationRate, domain=domain, minute=minute)
    return bool(
        DestinationRate.objects.filter(
            domain=domain, minute=minute, sent__lt=per_minute
        ).update(sent=F("sent") + 1)
    )


def forget_old_rates():
    cutoff = timezone.now() - timedelta(minutes=10)
    DestinationRate.objects.filter(minute__lt=cutoff).delete()


def _ensure_row(model, **key):
    if model.objects.filter(**key).exists():
        return
    try:
        with transaction.atomic():
            model.objects.create(**key)
    except IntegrityError:
        pass  # another worker created it first
