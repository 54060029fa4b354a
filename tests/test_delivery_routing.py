"""Routing and connections: MX order, fallbacks, null MX, IPv6, one session
for several messages, per-destination limits. Delivery runs are called in
this process against real SMTP servers on loopback, found through the test
DNS server."""

import pytest

from relay import delivery, destinations, routing
from relay.models import DestinationPolicy, Message, Recipient
from tests.support.delivery_fixtures import mx_hosts, outbound  # noqa: F401
from tests.support.outbound import (
    make_tenant,
    queue_message,
    recipient_states,
    serve_domain,
)

pytestmark = pytest.mark.django_db

DOMAIN = "customer.example.net"


def test_lower_preference_is_tried_first_and_a_dead_one_skipped(
    zone, outbound, mx_hosts
):
    # mx1 (preference 10) has no server at all; mx2 takes the message.
    serve_domain(
        zone,
        DOMAIN,
        (10, f"mx1.{DOMAIN}", "127.0.0.2"),
        (20, f"mx2.{DOMAIN}", "127.0.0.3"),
        (30, f"mx3.{DOMAIN}", "127.0.0.4"),
    )
    second, third = mx_hosts("127.0.0.3"), mx_hosts("127.0.0.4")
    message = queue_message(make_tenant(), [f"alice@{DOMAIN}"])

    delivery.deliver_to_domain(message.pk, DOMAIN)

    assert second.recipients == [f"alice@{DOMAIN}"]
    assert third.received == []
    rcpt = message.recipients.get()
    assert rcpt.state == Recipient.DELIVERED
    attempts = list(
        rcpt.attempts_made.order_by("id").values_list(
            "remote_host", "remote_address", "reply_code"
        )
    )
    assert attempts[0][:2] == (f"mx1.{DOMAIN}", "127.0.0.2")
    assert attempts[0][2] == 451
    assert attempts[1] == (f"mx2.{DOMAIN}", "127.0.0.3", 250)
    assert Message.objects.get(pk=message.pk).state == Message.DONE


def test_equal_preferences_are_shuffled(zone, outbound):
    serve_domain(
        zone,
        DOMAIN,
        (10, f"a.{DOMAIN}", "127.0.0.2"),
        (10, f"b.{DOMAIN}", "127.0.0.3"),
        (5, f"first.{DOMAIN}", "127.0.0.4"),
    )
    orders = {tuple(hop.host for hop in routing.hops_for(DOMAIN)) for _ in range(40)}
    assert orders == {
        (f"first.{DOMAIN}", f"a.{DOMAIN}", f"b.{DOMAIN}"),
        (f"first.{DOMAIN}", f"b.{DOMAIN}", f"a.{DOMAIN}"),
    }


def test_domain_without_mx_gets_mail_at_its_own_address(zone, outbound, mx_hosts):
    zone.add_a(DOMAIN, "127.0.0.5")
    server = mx_hosts("127.0.0.5")
    message = queue_message(make_tenant(), [f"bob@{DOMAIN}"])

    delivery.deliver_to_domain(message.pk, DOMAIN)

    assert server.recipients == [f"bob@{DOMAIN}"]
    assert recipient_states(message) == {f"bob@{DOMAIN}": Recipient.DELIVERED}


def test_null_mx_bounces_at_once(zone, outbound):
    zone.add_mx(DOMAIN, ".", 0)
    message = queue_message(make_tenant(), [f"carol@{DOMAIN}"])

    delivery.deliver_to_domain(message.pk, DOMAIN)

    rcpt = message.recipients.get()
    assert rcpt.state == Recipient.BOUNCED
    assert rcpt.last_reply.startswith("550 5.1.10")
    assert rcpt.attempts_made.count() == 0


def test_ipv6_mx_host(zone, outbound, mx_hosts):
    zone.add_mx(DOMAIN, f"mx6.{DOMAIN}", 10)
    zone.add_a(f"mx6.{DOMAIN}", "::1")
    server = mx_hosts("::1")
    message = queue_message(make_tenant(), [f"dave@{DOMAIN}"])

    delivery.deliver_to_domain(message.pk, DOMAIN)

    assert server.recipients == [f"dave@{DOMAIN}"]
    assert server.received[0].peer == "::1"
    assert message.recipients.get().attempts_made.get().remote_address == "::1"


def test_several_messages_share_one_session(zone, outbound, mx_hosts):
    serve_domain(zone, DOMAIN, (10, f"mx1.{DOMAIN}", "127.0.0.2"))
    server = mx_hosts("127.0.0.2")
    tenant = make_tenant()
    messages = [
        queue_message(
            tenant, [f"user{i}@{DOMAIN}", f"other{i}@{DOMAIN}"], subject=f"Invoice {i}"
        )
        for i in range(3)
    ]
    # Another tenant's message waits for its own session.
    foreign = queue_message(make_tenant("Other"), [f"zed@{DOMAIN}"])

    delivery.deliver_to_domain(messages[0].pk, DOMAIN)

    received = server.wait_for(3)
    assert len(received) == 3
    assert len({t.session for t in received}) == 1
    assert [sorted(t.rcpt_tos) for t in received] == [
        sorted([f"user{i}@{DOMAIN}", f"other{i}@{DOMAIN}"]) for i in range(3)
    ]
    for message in messages:
        assert set(recipient_states(message).values()) == {Recipient.DELIVERED}
    assert recipient_states(foreign) == {f"zed@{DOMAIN}": Recipient.QUEUED}

    # Running the other messages' own tasks afterwards sends nothing again.
    for message in messages[1:]:
        delivery.deliver_to_domain(message.pk, DOMAIN)
    assert len(server.received) == 3


def test_connection_limit_postpones_without_counting_an_attempt(
    zone, outbound, mx_hosts
):
    serve_domain(zone, DOMAIN, (10, f"mx1.{DOMAIN}", "127.0.0.2"))
    server = mx_hosts("127.0.0.2")
    DestinationPolicy.objects.create(domain=DOMAIN, max_connections=1)
    message = queue_message(make_tenant(), [f"erin@{DOMAIN}"])
    busy = destinations.take_slot(DOMAIN)  # another run holds the only slot

    delivery.deliver_to_domain(message.pk, DOMAIN)

    rcpt = message.recipients.get()
    assert rcpt.state == Recipient.DEFERRED
    assert rcpt.attempts == 0
    assert server.received == []
    assert message.events.filter(kind="postponed").exists()

    destinations.release_slot(DOMAIN, busy)
    Recipient.objects.filter(pk=rcpt.pk).update(next_attempt_at=None)
    delivery.deliver_to_domain(message.pk, DOMAIN)
    assert server.recipients == [f"erin@{DOMAIN}"]
    assert destinations.take_slot(DOMAIN) is not None  # the run gave it back


def test_rate_limit_per_destination(zone, outbound, mx_hosts):
    serve_domain(zone, DOMAIN, (10, f"mx1.{DOMAIN}", "127.0.0.2"))
    server = mx_hosts("127.0.0.2")
    DestinationPolicy.objects.create(domain=DOMAIN, messages_per_minute=2)
    tenant = make_tenant()
    messages = [queue_message(tenant, [f"r{i}@{DOMAIN}"]) for i in range(3)]

    delivery.deliver_to_domain(messages[0].pk, DOMAIN)

    assert len(server.received) == 2
    states = [recipient_states(m)[f"r{i}@{DOMAIN}"] for i, m in enumerate(messages)]
    assert states == [Recipient.DELIVERED, Recipient.DELIVERED, Recipient.DEFERRED]
    assert messages[2].recipients.get().attempts == 0


@pytest.mark.parametrize("supported", [True, False])
def test_non_ascii_address_needs_smtputf8(zone, outbound, mx_hosts, supported):
    serve_domain(zone, DOMAIN, (10, f"mx1.{DOMAIN}", "127.0.0.2"))
    server = mx_hosts("127.0.0.2", smtputf8=supported)
    message = queue_message(
        make_tenant(), [f"jösé@{DOMAIN}"], envelope_params={"SMTPUTF8": True}
    )

    delivery.deliver_to_domain(message.pk, DOMAIN)

    rcpt = message.recipients.get()
    if supported:
        assert rcpt.state == Recipient.DELIVERED
        assert server.recipients == [f"jösé@{DOMAIN}"]
        assert "SMTPUTF8" in server.received[0].mail_options
    else:
        assert rcpt.state == Recipient.BOUNCED
        assert (
            rcpt.last_reply
            == "553 5.6.7 The receiving server does not support SMTPUTF8"
        )
        assert server.received == []
