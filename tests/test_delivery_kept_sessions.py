"""Sessions kept open between delivery runs (relay/session_cache.py): a later
run to the same destination goes over the session an earlier one left, a
session the server closed meanwhile is replaced without a failed attempt,
and sessions do not outlive their idle time or their share of messages."""

import time

import pytest

from relay import delivery, session_cache
from relay.models import DeliveryAttempt, Recipient
from tests.support.delivery_fixtures import mx_hosts, outbound  # noqa: F401
from tests.support.outbound import make_tenant, queue_message, serve_domain

pytestmark = pytest.mark.django_db

DOMAIN = "customer.example.net"


@pytest.fixture
def server(zone, outbound, mx_hosts):
    outbound.DELIVERY_SESSION_IDLE = 5
    serve_domain(zone, DOMAIN, (10, f"mx1.{DOMAIN}", "127.0.0.2"))
    yield mx_hosts("127.0.0.2")
    session_cache.close_idle()


def deliver_one_by_one(tenant, *addresses):
    """Each address in a message of its own, each delivered by a run of its
    own; returns the messages."""
    messages = []
    for address in addresses:
        message = queue_message(tenant, [address])
        delivery.deliver_to_domain(message.pk, DOMAIN)
        messages.append(message)
    return messages


def delivered(messages):
    states = Recipient.objects.filter(message__in=messages).values_list(
        "state", flat=True
    )
    return list(states) == [Recipient.DELIVERED] * len(messages)


def sessions(server):
    return [t.session for t in server.received]


def test_a_later_run_goes_over_the_session_an_earlier_one_left(server):
    messages = deliver_one_by_one(make_tenant(), f"a@{DOMAIN}", f"b@{DOMAIN}")

    assert delivered(messages)
    first, second = sessions(server)
    assert first == second


def test_another_tenant_gets_a_session_of_its_own(server):
    deliver_one_by_one(make_tenant("Shop"), f"a@{DOMAIN}")
    deliver_one_by_one(make_tenant("Other"), f"b@{DOMAIN}")

    first, second = sessions(server)
    assert first != second


def test_a_session_the_server_closed_is_replaced_without_a_failed_attempt(
    server,
):
    tenant = make_tenant()
    deliver_one_by_one(tenant, f"a@{DOMAIN}")
    server.close_connections()
    time.sleep(0.2)

    [message] = deliver_one_by_one(tenant, f"b@{DOMAIN}")

    assert delivered([message])
    first, second = sessions(server)
    assert first != second
    codes = DeliveryAttempt.objects.filter(recipient__message=message)
    assert list(codes.values_list("reply_code", flat=True)) == [250]


def test_a_session_is_not_kept_beyond_its_idle_time(server, outbound):
    outbound.DELIVERY_SESSION_IDLE = 1
    tenant = make_tenant()
    deliver_one_by_one(tenant, f"a@{DOMAIN}")
    time.sleep(1.5)
    deliver_one_by_one(tenant, f"b@{DOMAIN}")

    first, second = sessions(server)
    assert first != second


def test_the_share_of_messages_per_session_counts_across_runs(server, outbound):
    outbound.DELIVERY_MESSAGES_PER_SESSION = 2
    addresses = [f"{name}@{DOMAIN}" for name in "abc"]

    messages = deliver_one_by_one(make_tenant(), *addresses)

    assert delivered(messages)
    first, second, third = sessions(server)
    assert first == second != third
