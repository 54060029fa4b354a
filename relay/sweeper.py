"""Recovery: the database, not the broker, says what is left to do.

A task can be lost (broker restarted, worker killed); every few seconds the
sweeper finds the work that should be in flight and is not, and enqueues it
again. Each task is safe to run twice, so a spurious re-enqueue costs nothing.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from relay import destinations, pipeline, webhooks
from relay.models import Message, MessageEvent, Recipient

log = logging.getLogger("postern.sweeper")


def sweep():
    from relay.tasks import deliver, post_webhook, process_message

    now = timezone.now()
    stale = now - timedelta(seconds=settings.POSTERN_STALE_AFTER)

    for message_id in resettable_messages(stale):
        # Moving the message back to RECEIVED lets process_message claim it.
        reset = Message.objects.filter(
            pk=message_id,
            state__in=[Message.RECEIVED, Message.PROCESSING],
            state_changed_at__lt=stale,
        ).update(state=Message.RECEIVED, state_changed_at=now)
        if reset:
            process_message.delay(message_id)

    lease = timedelta(seconds=settings.DELIVERY_CLAIM_LEASE)
    expired = expire_claims(claimed_before=now - lease)

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
    posts = webhooks.due_posts()
    for post_id in posts:
        post_webhook.delay(post_id)
    destinations.forget_old_rates()
    if due or expired or posts:
        log.info(
            "event=sweep due=%d expired_claims=%d webhook_posts=%d",
            len(due),
            expired,
            len(posts),
        )


def expire_claims(claimed_before):
    """Give back the recipients of delivery runs that died: those claimed
    before claimed_before.

    A recipient whose end of data had been sent (data_sent_at) may have the
    message already: it is not sent again but marked unconfirmed, for the
    sender to see (at most once, never silently). The others never got it and
    are simply due again. Returns how many claims expired.
    """
    old = Recipient.objects.filter(
        state=Recipient.SENDING, claimed_at__lt=claimed_before
    )
    with transaction.atomic():
        unsure = list(
            old.filter(data_sent_at__isnull=False)
            .select_related("message")
            .select_for_update(of=("self",))
        )
        for rcpt in unsure:
            reply = "the delivery run stopped after sending; not sent again"
            Recipient.objects.filter(pk=rcpt.pk, state=Recipient.SENDING).update(
                state=Recipient.UNCONFIRMED, claim_token=None, last_reply=reply
            )
            MessageEvent.objects.create(
                message=rcpt.message, kind="unconfirmed", detail=f"to={rcpt.address}"
            )
            webhooks.announce(rcpt.message, "unconfirmed", rcpt, reply)
    for message in {rcpt.message for rcpt in unsure}:
        pipeline.finish_if_done(message)
    retried = old.filter(data_sent_at__isnull=True).update(
        state=Recipient.DEFERRED, next_attempt_at=timezone.now(), claim_token=None
    )
    return len(unsure) + retried


def resettable_messages(stale):
    return list(
        Message.objects.filter(
            state__in=[Message.RECEIVED, Message.PROCESSING], state_changed_at__lt=stale
        ).values_list("pk", flat=True)[:1000]
    )
