"""Delivery through the real processes: swaks → gateway → worker → test MX
hosts on 127.0.0.2 and 127.0.0.3, with retries driven by the worker's own
sweeper."""

import email

import pytest

from relay import suppression
from relay.models import DeliveryAttempt, Message, Recipient, Suppression
from tests.support.clients import swaks
from tests.support.delivery_fixtures import mx_hosts  # noqa: F401
from tests.support.outbound import serve_domain
from tests.support.senders import make_sender
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DOMAIN = "customer.example.net"



@pytest.fixture
def sender(zone):
    return make_sender(zone)


def send(stack, sender, *recipients):
    # swaks takes several recipients as one comma-separated --to.
    result = swaks(
        stack,
        sender=sender.address,
        to=",".join(recipients),
        auth=(sender.username, sender.secret),
    )
    assert result.returncode == 0, result.output
    return Message.objects.latest("created_at")


def test_deferred_mail_is_retried_by_the_worker(stack, zone, mx_hosts, sender):
    serve_domain(zone, DOMAIN, (10, f"mx1.{DOMAIN}", "127.0.0.2"))
    server = mx_hosts("127.0.0.2")
    server.behaviour.rcpt_reply[f"alice@{DOMAIN}"] = "451 4.2.0 Greylisted, come back"

    message = send(stack, sender, f"alice@{DOMAIN}")
    assert wait_until(lambda: DeliveryAttempt.objects.filter(reply_code=451).exists())
    server.behaviour.rcpt_reply.clear()

    assert wait_until(lambda: Message.objects.get(pk=message.pk).state == Message.DONE)
    rcpt = message.recipients.get()
    assert rcpt.state == Recipient.DELIVERED
    codes = list(rcpt.attempts_made.order_by("id").values_list("reply_code", flat=True))
    assert codes[0] == 451 and codes[-1] == 250
    assert server.recipients == [f"alice@{DOMAIN}"]


def test_suppressed_recipient_is_dropped_and_a_bounce_reported(
    stack, zone, mx_hosts, sender
):
    serve_domain(zone, DOMAIN, (10, f"mx1.{DOMAIN}", "127.0.0.2"))
    serve_domain(
        zone, sender.domain.name, (10, f"mx.{sender.domain.name}", "127.0.0.3")
    )
    server, sender_mx = mx_hosts("127.0.0.2"), mx_hosts("127.0.0.3")
    suppression.suppress(sender.tenant.pk, f"gone@{DOMAIN}", Suppression.COMPLAINT)
    server.behaviour.rcpt_reply[f"unknown@{DOMAIN}"] = "550 5.1.1 No such user"

    message = send(stack, sender, f"ok@{DOMAIN}", f"gone@{DOMAIN}", f"unknown@{DOMAIN}")

    assert wait_until(lambda: Message.objects.get(pk=message.pk).state == Message.DONE)
    assert dict(message.recipients.values_list("address", "state")) == {
        f"ok@{DOMAIN}": Recipient.DELIVERED,
        f"gone@{DOMAIN}": Recipient.SUPPRESSED,
        f"unknown@{DOMAIN}": Recipient.BOUNCED,
    }
    assert server.recipients == [f"ok@{DOMAIN}"]
    assert Suppression.objects.filter(
        entry=f"unknown@{DOMAIN}", reason=Suppression.HARD_BOUNCE
    ).exists()

    (report,) = sender_mx.wait_for(1)
    assert report.rcpt_tos == [sender.address]
    status = email.message_from_bytes(report.data).get_payload()[1]
    assert status.get_payload()[1]["Final-Recipient"] == f"rfc822; unknown@{DOMAIN}"
