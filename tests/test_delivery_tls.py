"""Outbound TLS: opportunistic by default; verified and required when the
tenant, the operator or the domain's MTA-STS policy asks; a delivery that
cannot have the TLS it needs waits and is never sent in clear."""

import pytest

from relay import delivery
from relay.models import (
    DestinationPolicy,
    MtaStsPolicy,
    Recipient,
    TenantDeliverySettings,
)
from tests.support.delivery_fixtures import mx_hosts, outbound  # noqa: F401
from tests.support.http_servers import LoopbackHTTP
from tests.support.outbound import make_tenant, queue_message, serve_domain
from tests.support.test_ca import LoopbackCA

pytestmark = pytest.mark.django_db

DOMAIN = "customer.example.net"
MX_NAME = f"mx1.{DOMAIN}"


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return LoopbackCA.create(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def stranger_ca(tmp_path_factory):
    return LoopbackCA.create(tmp_path_factory.mktemp("other-ca"), "Unknown CA")


@pytest.fixture
def domain(zone, outbound, ca):
    outbound.DELIVERY_CA_FILE = str(ca.cert_file)
    return serve_domain(zone, DOMAIN, (10, MX_NAME, "127.0.0.2"))


def deliver_one(tenant, address=f"alice@{DOMAIN}"):
    message = queue_message(tenant, [address])
    delivery.deliver_to_domain(message.pk, DOMAIN)
    return message.recipients.get()


def tls_required_tenant():
    tenant = make_tenant()
    TenantDeliverySettings.objects.create(tenant=tenant, tls_required=True)
    return tenant


def test_opportunistic_tls_takes_any_certificate(domain, mx_hosts, stranger_ca):
    server = mx_hosts("127.0.0.2", stranger_ca.server_context("wrong.example.org"))
    rcpt = deliver_one(make_tenant())
    assert rcpt.state == Recipient.DELIVERED
    assert server.received[0].tls
    assert rcpt.attempts_made.get().tls_version.startswith("TLSv1.")


def test_opportunistic_without_starttls_goes_in_clear(domain, mx_hosts):
    server = mx_hosts("127.0.0.2")
    rcpt = deliver_one(make_tenant())
    assert rcpt.state == Recipient.DELIVERED
    assert not server.received[0].tls
    assert rcpt.attempts_made.get().tls_version == ""


def test_required_tls_without_starttls_waits(domain, mx_hosts):
    server = mx_hosts("127.0.0.2")
    rcpt = deliver_one(tls_required_tenant())
    assert rcpt.state == Recipient.DEFERRED
    assert rcpt.last_reply.startswith(f"451 4.7.10 {MX_NAME}[127.0.0.2]: no STARTTLS")
    assert server.received == []


def test_required_tls_with_a_valid_certificate_delivers(domain, mx_hosts, ca):
    server = mx_hosts("127.0.0.2", ca.server_context(MX_NAME))
    rcpt = deliver_one(tls_required_tenant())
    assert rcpt.state == Recipient.DELIVERED
    assert server.received[0].tls


@pytest.mark.parametrize("problem", ["unknown CA", "wrong name"])
def test_required_tls_with_a_bad_certificate_waits(
    domain, mx_hosts, ca, stranger_ca, problem
):
    if problem == "unknown CA":
        context = stranger_ca.server_context(MX_NAME)
    else:
        context = ca.server_context(f"other.{DOMAIN}")
    server = mx_hosts("127.0.0.2", context)
    rcpt = deliver_one(tls_required_tenant())
    assert rcpt.state == Recipient.DEFERRED
    assert "4.7.5" in rcpt.last_reply and "certificate not accepted" in rcpt.last_reply
    assert server.received == []


def test_operator_can_require_tls_for_a_destination(domain, mx_hosts):
    server = mx_hosts("127.0.0.2")
    DestinationPolicy.objects.create(domain=DOMAIN, tls_required=True)
    rcpt = deliver_one(make_tenant())
    assert rcpt.state == Recipient.DEFERRED
    assert "4.7.10" in rcpt.last_reply
    assert server.received == []


@pytest.fixture
def mta_sts(zone, outbound, ca):
    """Publish an MTA-STS policy for DOMAIN over HTTPS on loopback."""
    server = LoopbackHTTP(tls_context=ca.server_context(f"mta-sts.{DOMAIN}")).start()
    zone.add_a(f"mta-sts.{DOMAIN}", "127.0.0.1")
    outbound.MTA_STS_PORT = server.port
    outbound.MTA_STS_CA_FILE = str(ca.cert_file)

    def publish(mode, mx=MX_NAME, policy_id="20261204"):
        zone.remove(f"_mta-sts.{DOMAIN}")
        zone.add_txt(f"_mta-sts.{DOMAIN}", f"v=STSv1; id={policy_id}")
        server.pages["/.well-known/mta-sts.txt"] = (
            f"version: STSv1\nmode: {mode}\nmx: {mx}\nmax_age: 86400\n".encode()
        )

    yield publish
    server.stop()


def test_mta_sts_enforce_refuses_clear_text(domain, mx_hosts, mta_sts):
    mta_sts("enforce", mx=f"*.{DOMAIN}")
    server = mx_hosts("127.0.0.2")
    rcpt = deliver_one(make_tenant())
    assert rcpt.state == Recipient.DEFERRED
    assert "MTA-STS" in rcpt.last_reply and "4.7.10" in rcpt.last_reply
    assert server.received == []
    policy = MtaStsPolicy.objects.get(domain=DOMAIN)
    assert (policy.mode, policy.mx_patterns, policy.max_age) == (
        "enforce",
        f"*.{DOMAIN}",
        86400,
    )


def test_mta_sts_enforce_delivers_over_verified_tls(domain, mx_hosts, mta_sts, ca):
    mta_sts("enforce")
    server = mx_hosts("127.0.0.2", ca.server_context(MX_NAME))
    assert deliver_one(make_tenant()).state == Recipient.DELIVERED
    assert server.received[0].tls


def test_mta_sts_enforce_skips_mx_hosts_outside_the_policy(
    domain, mx_hosts, mta_sts, ca
):
    mta_sts("enforce", mx=f"mx9.{DOMAIN}")
    server = mx_hosts("127.0.0.2", ca.server_context(MX_NAME))
    rcpt = deliver_one(make_tenant())
    assert rcpt.state == Recipient.DEFERRED
    assert rcpt.last_reply == (
        f"451 4.7.5 No usable mail host: {MX_NAME} is not in the MTA-STS policy"
    )
    assert server.received == []


def test_mta_sts_testing_mode_does_not_block(domain, mx_hosts, mta_sts):
    mta_sts("testing")
    server = mx_hosts("127.0.0.2")
    assert deliver_one(make_tenant()).state == Recipient.DELIVERED
    assert not server.received[0].tls


def test_cached_mta_sts_policy_holds_when_the_record_disappears(
    domain, mx_hosts, mta_sts, zone
):
    mta_sts("enforce")
    mx_hosts("127.0.0.2")
    deliver_one(make_tenant())
    # An attacker strips the TXT record: the cached policy still applies
    # (RFC 8461 section 5.1).
    zone.remove(f"_mta-sts.{DOMAIN}")
    rcpt = deliver_one(make_tenant(), f"bob@{DOMAIN}")
    assert rcpt.state == Recipient.DEFERRED
    assert "MTA-STS" in rcpt.last_reply
