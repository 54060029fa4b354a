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

from relay import delivery, destinations, webhooks
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

    due = requeue_deliveries(now, stale)
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
            reply = (
                "the delivery run stopped while handing the message over, "
                "before the reply was recorded: it may or may not have "
                "arrived, and is not sent again so as not to arrive twice"
            )
            Recipient.objects.filter(pk=rcpt.pk, state=Recipient.SENDING).update(
                state=Recipient.UNCONFIRMED, claim_token=None, last_reply=reply
            )
            MessageEvent.objects.create(
                message=rcpt.message, kind="unconfirmed", detail=f"to={rcpt.address}"
            )
            webhooks.announce(rcpt.message, "unconfirmed", rcpt, reply)
    delivery.finish_done({rcpt.message_id for rcpt in unsure})
    retried = old.filter(data_sent_at__isnull=True).update(
        state=Recipient.DEFERRED, next_attempt_at=timezone.now(), claim_token=None
    )
    return len(unsure) + retried


def requeue_deliveries(now, stale):
    """The (message, domain) pairs to hand to the workers again: deferred
    recipients whose retry time has come, and queued ones whose task seems
    lost.

    A task waiting behind a backlog looks lost too, and the sweeper cannot see
    into the broker; so each message handed over has its clock restarted
    (state_changed_at), and is handed over again at most once per
    POSTERN_STALE_AFTER, not at every sweep.
    """
    # Filtered on the recipient's own columns only, so that PostgreSQL checks
    # them again on a row a delivery run has just claimed.
    due_now = Recipient.objects.filter(
        state=Recipient.DEFERRED, next_attempt_at__lte=now
    )
    retried = set(due_now.values_list("message_id", flat=True))
    due_now.update(state=Recipient.QUEUED, next_attempt_at=None)

    pairs = list(
        Recipient.objects.filter(state=Recipient.QUEUED, message__state=Message.QUEUED)
        .filter(Q(message__state_changed_at__lt=stale) | Q(message_id__in=retried))
        .values_list("message_id", "domain")
        .distinct()
    )
    Message.objects.filter(
        pk__in={message_id for message_id, _ in pairs}, state=Message.QUEUED
    ).update(state_changed_at=now)
    return pairs


def resettable_messages(stale):
    return list(
        Message.objects.filter(
            state__in=[Message.RECEIVED, Message.PROCESSING], state_changed_at__lt=stale
        ).values_list("pk", flat=True)[:1000]
    )
