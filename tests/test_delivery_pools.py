"""IP pools: a tenant's mail leaves from its pool's source addresses, others'
from the default pool; the test MX sees the peer address."""

import pytest

from relay import delivery
from relay.models import IpPool, Recipient, TenantDeliverySettings
from tests.support.delivery_fixtures import mx_hosts, outbound  # noqa: F401
from tests.support.outbound import make_tenant, queue_message, serve_domain

pytestmark = pytest.mark.django_db

DOMAIN = "customer.example.net"


@pytest.fixture
def server(zone, outbound, mx_hosts):
    serve_domain(zone, DOMAIN, (10, f"mx1.{DOMAIN}", "127.0.0.2"))
    return mx_hosts("127.0.0.2")


def tenant_in(pool, name):
    tenant = make_tenant(name)
    TenantDeliverySettings.objects.create(tenant=tenant, ip_pool=pool)
    return tenant


def send(tenant, count=1):
    for i in range(count):
        message = queue_message(tenant, [f"user{i}@{DOMAIN}"])
        delivery.deliver_to_domain(message.pk, DOMAIN)


def test_each_tenant_leaves_from_its_own_pool(server):
    IpPool.objects.create(name="shared", addresses="127.0.0.20", is_default=True)
    bank = IpPool.objects.create(name="bank", addresses="127.0.0.10")
    shops = IpPool.objects.create(name="shops", addresses="127.0.0.11\n127.0.0.12\n")

    send(tenant_in(bank, "Bank"), 3)
    send(tenant_in(shops, "Shop"), 12)
    send(make_tenant("No pool of its own"), 2)

    peers = [t.peer for t in server.wait_for(17)]
    assert peers[:3] == ["127.0.0.10"] * 3
    # Both of the pool's addresses are used, and no other.
    assert set(peers[3:15]) == {"127.0.0.11", "127.0.0.12"}
    assert peers[15:] == ["127.0.0.20"] * 2


def test_without_any_pool_the_system_picks_the_address(server):
    send(make_tenant())
    assert server.wait_for(1)[0].peer == "127.0.0.1"


def test_pool_without_an_address_of_the_mx_family_waits(zone, outbound, mx_hosts):
    zone.add_mx(DOMAIN, f"mx6.{DOMAIN}", 10)
    zone.add_a(f"mx6.{DOMAIN}", "::1")
    server = mx_hosts("::1")
    pool = IpPool.objects.create(name="v4 only", addresses="127.0.0.10")
    message = queue_message(tenant_in(pool, "Bank"), [f"alice@{DOMAIN}"])

    delivery.deliver_to_domain(message.pk, DOMAIN)

    rcpt = message.recipients.get()
    assert rcpt.state == Recipient.DEFERRED
    assert "pool v4 only has no IPv6 address" in rcpt.last_reply
    assert server.received == []
