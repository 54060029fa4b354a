"""The recovery sweep hands work back to the workers without flooding the
broker when a backlog makes tasks wait."""

from datetime import timedelta

import pytest
from django.utils import timezone

from relay.models import Message, Recipient
from relay.sweeper import requeue_deliveries
from tests.support.outbound import make_tenant, queue_message

pytestmark = pytest.mark.django_db


def age(message, seconds):
    Message.objects.filter(pk=message.pk).update(
        state_changed_at=timezone.now() - timedelta(seconds=seconds)
    )


def test_a_seemingly_lost_delivery_is_handed_over_once_per_stale_period():
    message = queue_message(make_tenant(), ["a@customer.example.net"])
    age(message, 600)
    now = timezone.now()
    stale = now - timedelta(seconds=60)

    assert requeue_deliveries(now, stale) == [(message.pk, "customer.example.net")]
    # The task may still be waiting in the broker: the next sweeps leave it.
    assert requeue_deliveries(now + timedelta(seconds=10), stale) == []
    assert requeue_deliveries(now + timedelta(seconds=20), stale) == []
    # A whole stale period later it is handed over again, in case it was lost.
    later = now + timedelta(seconds=61)
    assert requeue_deliveries(later, later - timedelta(seconds=60)) == [
        (message.pk, "customer.example.net")
    ]


def test_a_deferred_recipient_is_queued_again_once_when_due():
    message = queue_message(make_tenant(), ["a@customer.example.net"])
    rcpt = message.recipients.get()
    now = timezone.now()
    Recipient.objects.filter(pk=rcpt.pk).update(
        state=Recipient.DEFERRED, next_attempt_at=now - timedelta(seconds=1)
    )
    stale = now - timedelta(seconds=60)

    assert requeue_deliveries(now, stale) == [(message.pk, "customer.example.net")]
    rcpt.refresh_from_db()
    assert rcpt.state == Recipient.QUEUED and rcpt.next_attempt_at is None
    assert requeue_deliveries(now + timedelta(seconds=10), stale) == []


def test_a_recipient_not_yet_due_is_left_alone():
    message = queue_message(make_tenant(), ["a@customer.example.net"])
    now = timezone.now()
    message.recipients.update(
        state=Recipient.DEFERRED, next_attempt_at=now + timedelta(minutes=5)
    )
    assert requeue_deliveries(now, now - timedelta(seconds=60)) == []
    assert message.recipients.get().state == Recipient.DEFERRED
