"""DANE (RFC 7672): where an MX host's TLSA records come from an
authenticated MX lookup and are themselves authenticated (the AD bit from
the resolver), the session must use STARTTLS and the certificate must match
a usable record; otherwise the delivery waits and nothing is sent in clear.
Unauthenticated TLSA records change nothing."""

import pytest

from relay import dane, delivery
from relay.models import Recipient, TenantDeliverySettings
from tests.support.dane import (
    authenticate,
    mx_context,
    publish_tlsa,
    tlsa_data,
    tlsa_name,
)
from tests.support.delivery_fixtures import mx_hosts, outbound  # noqa: F401
from tests.support.outbound import make_tenant, queue_message, serve_domain
from tests.support.test_ca import LoopbackCA

pytestmark = pytest.mark.django_db

DOMAIN = "signed.example.net"
MX_NAME = f"mx1.{DOMAIN}"
PKIX_EE, DANE_TA, DANE_EE = 1, 2, 3


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    """The CA that DELIVERY_CA_FILE trusts."""
    return LoopbackCA.create(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory):
    """A CA nobody trusts: only DANE can vouch for its certificates."""
    return LoopbackCA.create(tmp_path_factory.mktemp("private-ca"), "Private CA")


@pytest.fixture
def domain(zone, outbound, ca):
    outbound.DELIVERY_CA_FILE = str(ca.cert_file)
    outbound.DANE = "auto"  # the test resolver is on loopback: DANE is on
    serve_domain(zone, DOMAIN, (10, MX_NAME, "127.0.0.2"))
    yield DOMAIN
    zone.authenticated.clear()


@pytest.fixture
def tlsa(zone, delivery_port):
    """Publish a TLSA record for the MX host at the delivery port."""

    def publish(usage, selector, matching_type, data):
        publish_tlsa(zone, MX_NAME, delivery_port, usage, selector, matching_type, data)

    return publish


@pytest.fixture
def signed(zone, domain, delivery_port):
    """Both the MX RRset and the TLSA RRset come back authenticated."""
    authenticate(zone, DOMAIN, tlsa_name(MX_NAME, delivery_port))


def deliver_one(tenant):
    message = queue_message(tenant, [f"alice@{DOMAIN}"])
    delivery.deliver_to_domain(message.pk, DOMAIN)
    return message.recipients.get()


def tls_required_tenant():
    """A tenant whose mail needs verified TLS: without DANE, a certificate
    from the private CA would be refused."""
    tenant = make_tenant()
    TenantDeliverySettings.objects.create(tenant=tenant, tls_required=True)
    return tenant


def only_attempt(rcpt):
    return rcpt.attempts_made.get()


@pytest.mark.parametrize("selector, matching_type", [(1, 1), (0, 1), (1, 2), (0, 0)])
def test_matching_dane_ee_record_delivers_over_tls(
    domain, signed, tlsa, mx_hosts, private_ca, selector, matching_type
):
    # Section 3.1.1: a DANE-EE match needs neither a trusted CA nor the
    # right name.
    context, cert = mx_context(private_ca, "anything.example.org")
    tlsa(DANE_EE, selector, matching_type, tlsa_data(cert, selector, matching_type))
    server = mx_hosts("127.0.0.2", context)

    rcpt = deliver_one(tls_required_tenant())

    assert rcpt.state == Recipient.DELIVERED
    assert server.received[0].tls
    assert only_attempt(rcpt).tls_version.startswith("TLSv1.")


@pytest.fixture
def mx_with_another_key(tlsa, mx_hosts, ca):
    """An MX with STARTTLS whose DANE-EE record names a key it does not have."""
    context, _ = mx_context(ca, MX_NAME)
    _, other = mx_context(ca, MX_NAME)
    tlsa(DANE_EE, 1, 1, tlsa_data(other, 1, 1))
    return mx_hosts("127.0.0.2", context)


def test_dane_ee_record_that_does_not_match_defers(domain, signed, mx_with_another_key):
    server = mx_with_another_key

    rcpt = deliver_one(make_tenant())

    assert rcpt.state == Recipient.DEFERRED
    assert server.received == []
    expected = (
        f"4.7.5 {MX_NAME}[127.0.0.2]: certificate does not match; "
        f"TLS required by the DANE TLSA records of {MX_NAME}"
    )
    assert rcpt.last_reply == f"451 {expected}"
    assert only_attempt(rcpt).reply_text == expected


def test_dane_without_starttls_defers_and_sends_nothing_in_clear(
    domain, signed, tlsa, mx_hosts, ca
):
    _, cert = mx_context(ca, MX_NAME)
    tlsa(DANE_EE, 1, 1, tlsa_data(cert, 1, 1))
    server = mx_hosts("127.0.0.2")

    rcpt = deliver_one(make_tenant())

    assert rcpt.state == Recipient.DEFERRED
    assert server.received == []
    assert rcpt.last_reply == (
        f"451 4.7.10 {MX_NAME}[127.0.0.2]: no STARTTLS offered; "
        f"TLS required by the DANE TLSA records of {MX_NAME}"
    )


@pytest.mark.parametrize(
    "authenticated", ["nothing", "only the MX records", "only the TLSA records"]
)
def test_unauthenticated_tlsa_records_change_nothing(
    zone, domain, mx_with_another_key, delivery_port, authenticated
):
    # RFC 7672 sections 2.2.1 and 2.2.2: DANE needs both lookups secure.
    if authenticated == "only the MX records":
        authenticate(zone, DOMAIN)
    elif authenticated == "only the TLSA records":
        authenticate(zone, tlsa_name(MX_NAME, delivery_port))
    server = mx_with_another_key

    rcpt = deliver_one(make_tenant())

    assert rcpt.state == Recipient.DELIVERED
    assert server.received[0].tls


def test_dane_can_be_turned_off(domain, signed, tlsa, mx_hosts, outbound):
    outbound.DANE = "off"
    tlsa(DANE_EE, 1, 1, b"\x00" * 32)
    server = mx_hosts("127.0.0.2")

    rcpt = deliver_one(make_tenant())

    assert rcpt.state == Recipient.DELIVERED
    assert not server.received[0].tls


def test_only_unusable_records_require_unauthenticated_tls(
    domain, signed, tlsa, mx_hosts, private_ca
):
    # RFC 7672 sections 2.2 and 3.1.3: PKIX-EE is unusable for SMTP, but the
    # records still say the host does TLS.
    # The record matches nothing: PKIX-EE taken for DANE-EE would defer.
    context, _ = mx_context(private_ca, "anything.example.org")
    tlsa(PKIX_EE, 1, 1, b"\x00" * 32)
    server = mx_hosts("127.0.0.2", context)

    rcpt = deliver_one(make_tenant())

    assert rcpt.state == Recipient.DELIVERED
    assert server.received[0].tls


def test_only_unusable_records_without_starttls_defer(domain, signed, tlsa, mx_hosts):
    tlsa(PKIX_EE, 1, 1, b"\x00" * 32)
    server = mx_hosts("127.0.0.2")

    rcpt = deliver_one(make_tenant())

    assert rcpt.state == Recipient.DEFERRED
    assert server.received == []
    assert "4.7.10" in rcpt.last_reply and "(none usable)" in rcpt.last_reply


def test_dane_ta_record_delivers_when_the_chain_leads_to_it(
    domain, signed, tlsa, mx_hosts, private_ca
):
    context, _ = mx_context(private_ca, MX_NAME, send_ca=True)
    tlsa(DANE_TA, 1, 1, tlsa_data(private_ca.cert, 1, 1))
    server = mx_hosts("127.0.0.2", context)

    rcpt = deliver_one(tls_required_tenant())

    assert rcpt.state == Recipient.DELIVERED
    assert server.received[0].tls


@pytest.mark.parametrize("problem", ["wrong name", "anchor not sent", "other CA"])
def test_dane_ta_record_defers_when_the_chain_does_not_satisfy_it(
    domain, signed, tlsa, mx_hosts, private_ca, ca, problem
):
    # Section 3.1.2: with DANE-TA the name is checked, unlike DANE-EE.
    name = f"other.{DOMAIN}" if problem == "wrong name" else MX_NAME
    issuer = ca if problem == "other CA" else private_ca
    context, _ = mx_context(issuer, name, send_ca=problem != "anchor not sent")
    tlsa(DANE_TA, 1, 1, tlsa_data(private_ca.cert, 1, 1))
    server = mx_hosts("127.0.0.2", context)

    rcpt = deliver_one(make_tenant())

    assert rcpt.state == Recipient.DEFERRED
    assert server.received == []
    assert "4.7.5" in rcpt.last_reply and "does not match" in rcpt.last_reply


def test_failed_tlsa_lookup_defers_without_connecting(
    zone, domain, signed, mx_hosts, ca, delivery_port
):
    # Section 2.1.1: a lookup that fails may be an attacker hiding the records.
    zone.silent.add(tlsa_name(MX_NAME, delivery_port))
    server = mx_hosts("127.0.0.2", mx_context(ca, MX_NAME)[0])

    rcpt = deliver_one(make_tenant())

    assert rcpt.state == Recipient.DEFERRED
    assert server.received == []
    assert rcpt.last_reply.startswith(
        f"451 4.7.5 {MX_NAME}[127.0.0.2]: TLSA lookup for "
        f"{tlsa_name(MX_NAME, delivery_port)} failed"
    )


def test_unusable_records_do_not_lift_a_verified_tls_requirement(
    domain, signed, tlsa, mx_hosts, private_ca
):
    # The tenant asked for verified TLS; records that authenticate nothing
    # cannot stand in for the CA check.
    context, _ = mx_context(private_ca, MX_NAME)
    tlsa(PKIX_EE, 1, 1, b"\x00" * 32)
    server = mx_hosts("127.0.0.2", context)

    rcpt = deliver_one(tls_required_tenant())

    assert rcpt.state == Recipient.DEFERRED
    assert server.received == []
    assert "4.7.5" in rcpt.last_reply and "certificate not accepted" in rcpt.last_reply


@pytest.mark.parametrize(
    "mode, resolver, on",
    [
        ("auto", "127.0.0.1:5353", True),
        ("auto", "[::1]:53", True),
        ("auto", "192.0.2.53", False),
        ("auto", "", False),
        ("on", "192.0.2.53", True),
        ("off", "127.0.0.1", False),
    ],
)
def test_dane_trusts_only_a_resolver_on_loopback_unless_told(
    settings, mode, resolver, on
):
    settings.DANE, settings.DNS_RESOLVER = mode, resolver
    assert dane.enabled() is on
