"""Recovery: the database, not the broker, says what is left to do.

A task can be lost (broker restarted, worker killed); every few seconds the
sweeper finds the work that should be in flight and is not, and enqueues it
again. Each task is safe to run twice, so a spurious re-enqueue costs nothing.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from relay.models import Message, Recipient

log = logging.getLogger("postern.sweeper")

# A recipient claimed longer ago than this belongs to a run that died.
CLAIM_LEASE = timedelta(minutes=15)


def sweep():
    from relay.tasks import deliver, process_message

    now = timezone.now()
    stale = now - timedelta(seconds=settings.POSTERN_STALE_AFTER)

    for message_id in resettable_messages(stale):
        # Moving the message back to RECEIVED lets process_message claim it.
        reset = Message.objects.filter(
            pk=message_id, state__in=[Message.RECEIVED, Message.PROCESSING],
            state_changed_at__lt=stale,
        ).update(state=Message.RECEIVED, state_changed_at=now)
        if reset:
            process_message.delay(message_id)

    # Known limit: a run that died after the remote server accepted the data
    # but before it recorded so leaves its recipients here; they are tried
    # again and may get the message twice.
    expired = Recipient.objects.filter(
        state=Recipient.SENDING, claimed_at__lt=now - CLAIM_LEASE
    ).update(state=Recipient.DEFERRED, next_attempt_at=now, claim_token=None)

    due = (
        Recipient.objects.filter(message__state=Message.QUEUED)
        .filter(
            Q(state=Recipient.DEFERRED, next_attempt_at__lte=now)
            | Q(state=Recipient.QUEUED, message__state_changed_at__lt=stale)
        )
        .values_list("message_id", "domain")
        .distinct()
    )
    due = list(due)
    for message_id, domain in due:
        deliver.delay(message_id, domain)
    if due or expired:
        log.info("event=sweep due=%d expired_claims=%d", len(due), expired)


def resettable_messages(stale):
    return list(
        Message.objects.filter(
            state__in=[Message.RECEIVED, Message.PROCESSING], state_changed_at__lt=stale
        ).values_list("pk", flat=True)[:1000]
    )
