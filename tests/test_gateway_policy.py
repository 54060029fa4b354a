"""Intake policy: who a credential may send as. The rules first, as plain
functions, then through the real gateway with swaks and raw dialogues."""

import pytest

from policies.sender import (
    check_envelope_sender,
    check_header_sender,
    may_claim,
    parse_headers,
    parse_identity_patterns,
)
from tenants.models import Credential
from tests.support.clients import swaks
from tests.support.raw_smtp import authenticated
from tests.support.senders import make_sender
from tests.support.gateway import submissions

DOMAINS = frozenset({"shop.example.test", "mail.shop.example.test"})


def headers(*lines):
    return parse_headers(("\r\n".join(lines) + "\r\n\r\nBody.\r\n").encode())


@pytest.mark.parametrize("address, patterns, allowed", [
    ("billing@shop.example.test", "", True),
    ("x@other.example.test", "", False),
    ("billing@shop.example.test", "billing@shop.example.test", True),
    ("Billing@Shop.Example.Test", "billing@shop.example.test", True),
    ("sales@shop.example.test", "billing@shop.example.test", False),
    ("anyone@shop.example.test", "*@shop.example.test", True),
    # Subdomains are listed on their own.
    ("anyone@mail.shop.example.test", "*@shop.example.test", False),
    ("anyone@mail.shop.example.test", "*@shop.example.test\n*@mail.shop.example.test",
     True),
    ("invoice-17@shop.example.test", "invoice-*@shop.example.test", True),
    ("invoice@shop.example.test", "invoice-*@shop.example.test", False),
    # A pattern never reaches past the tenant's verified domains.
    ("x@other.example.test", "*@other.example.test", False),
    ("a.b@shop.example.test", "a?b@shop.example.test", False),
])
def test_identity_patterns(address, patterns, allowed):
    assert may_claim(address, DOMAINS, parse_identity_patterns(patterns)) is allowed


def test_envelope_sender_reasons():
    only_billing = parse_identity_patterns("billing@shop.example.test")
    assert str(check_envelope_sender("sales@shop.example.test", DOMAINS,
                                     only_billing)) == (
        "550 5.7.1 Sender sales@shop.example.test is not an identity this "
        "credential may use"
    )
    assert str(check_envelope_sender("x@bank.example", DOMAINS)) == (
        "550 5.7.1 Sender domain bank.example is not a verified domain of this "
        "account"
    )


@pytest.mark.parametrize("lines, reply", [
    ((), "550 5.6.0 Message has no From header (RFC 5322 3.6)"),
    (("From: <a@shop.example.test>", "From: <b@shop.example.test>"),
     "550 5.6.0 Message has more than one From header (RFC 5322 3.6)"),
    (("From: <a@shop.example.test>, <b@shop.example.test>",),
     "550 5.6.0 From header must hold exactly one address"),
    (('From: "billing@bank.example" <a@shop.example.test>',),
     "550 5.7.1 From display name shows an address at bank.example, which is "
     "not a verified domain of this account"),
    (("From: Billing <a@shop.example.test>", "Sender: <ops@bank.example>"),
     "550 5.7.1 Sender domain bank.example is not a verified domain of this account"),
    (("From: <a@shop.example.test>", "Reply-To: <help@bank.example>"),
     "550 5.7.1 Reply-To domain bank.example is not a verified domain of this "
     "account"),
    (("From: <sales@shop.example.test>",),
     "550 5.7.1 From sales@shop.example.test is not an identity this credential "
     "may use"),
    (("From: <billing@shop.example.test>", "Reply-To: <sales@shop.example.test>"),
     "550 5.7.1 Reply-To sales@shop.example.test is not an identity this "
     "credential may use"),
])
def test_header_sender_reasons(lines, reply):
    identities = parse_identity_patterns("billing@shop.example.test\n"
                                         "a@shop.example.test")
    assert str(check_header_sender(headers(*lines), DOMAINS, identities)) == reply


# Ways to show a reader an address the tenant does not own, next to a real
# address that it does.
SHOWN_ELSEWHERE = [
    pytest.param("From: app@shop.example.test (ceo@bank.example)", id="comment"),
    pytest.param("From: <app@shop.example.test> (Mail from\r\n ceo@bank.example)",
                 id="folded-comment"),
    pytest.param('From: "ceo\uff20bank.example" <app@shop.example.test>',
                 id="full-width-at"),
    pytest.param('From: "ceo@bank\u3002example" <app@shop.example.test>',
                 id="ideographic-full-stop"),
    pytest.param('From: "ceo@bank\uff61example" <app@shop.example.test>',
                 id="halfwidth-ideographic-full-stop"),
    pytest.param('From: "ceo@bank\uff0eexample" <app@shop.example.test>',
                 id="full-width-full-stop"),
    pytest.param('From: "ceo\\@bank.example" <app@shop.example.test>',
                 id="quoted-pair"),
    pytest.param("From: =?utf-8?q?ceo=40bank=2Eexample?= <app@shop.example.test>",
                 id="encoded-word"),
    pytest.param("From: <app@shop.example.test> (=?utf-8?b?Y2VvQGJhbmsuZXhhbXBsZQ==?=)",
                 id="encoded-word-in-comment"),
]
SHOWN_ELSEWHERE_REFUSAL = (
    "550 5.7.1 From display name shows an address at bank.example, which is not "
    "a verified domain of this account"
)


@pytest.mark.parametrize("line", SHOWN_ELSEWHERE)
def test_addresses_shown_in_comments_or_look_alikes_are_refused(line):
    refusal = check_header_sender(headers(line), DOMAINS)
    assert str(refusal) == SHOWN_ELSEWHERE_REFUSAL


def test_unicode_domain_shown_is_named_by_its_a_label():
    refusal = check_header_sender(
        headers('From: "ceo@b\u00e4nk.example" <app@shop.example.test>'), DOMAINS
    )
    assert str(refusal) == (
        "550 5.7.1 From display name shows an address at xn--bnk-qla.example, "
        "which is not a verified domain of this account"
    )


@pytest.mark.parametrize("lines", [
    ('From: "Shop billing" <billing@shop.example.test>',),
    ("From: billing@shop.example.test (Shop billing)",),
    ("From: <billing@shop.example.test> (sent for billing@mail.shop.example.test)",),
    ('From: "Caf\u00e9 \uff33hop" <billing@shop.example.test>',),
    ('From: "billing@shop.example.test" <billing@shop.example.test>',),
    ('From: "billing@mail.shop.example.test" <billing@shop.example.test>',
     "Reply-To: <billing@shop.example.test>"),
])
def test_honest_headers_pass(lines):
    assert check_header_sender(headers(*lines), DOMAINS) is None


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_credential_identities_apply_at_mail_and_data(gateway, zone):
    sender = make_sender(zone)
    domain = sender.domain.name
    Credential.objects.filter(username=sender.username).update(
        allowed_identities=f"billing@{domain}\n"
    )
    refused = swaks(gateway, sender=f"sales@{domain}", to="a@customer.example.net",
                    auth=(sender.username, sender.secret))
    assert refused.returncode != 0
    assert (f"550 5.7.1 Sender sales@{domain} is not an identity this credential "
            "may use") in refused.output

    impersonating = swaks(
        gateway, sender=f"billing@{domain}", to="a@customer.example.net",
        auth=(sender.username, sender.secret),
        headers=[f'From: "billing@bank.example" <billing@{domain}>'],
    )
    assert "550 5.7.1 From display name shows an address at bank.example" in (
        impersonating.output
    )

    client = authenticated(gateway, sender)
    try:
        client.command(f"MAIL FROM:<billing@{domain}>")
        client.command("RCPT TO:<a@customer.example.net>")
        client.command("DATA")
        client.send(f"From: <billing@{domain}>\r\nFrom: <billing@{domain}>\r\n\r\n"
                    "Twice.\r\n.\r\n")
        assert client.reply() == (
            "550 5.6.0 Message has more than one From header (RFC 5322 3.6)"
        )
    finally:
        client.close()

    accepted = swaks(gateway, sender=f"billing@{domain}", to="a@customer.example.net",
                     auth=(sender.username, sender.secret),
                     headers=[f"From: Billing <billing@{domain}>"])
    assert accepted.returncode == 0, accepted.output
    assert submissions().count() == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("line", SHOWN_ELSEWHERE)
def test_gateway_refuses_addresses_shown_in_comments_or_look_alikes(gateway, zone,
                                                                    line):
    sender = make_sender(zone)
    client = authenticated(gateway, sender)
    try:
        client.command(f"MAIL FROM:<{sender.address}>")
        client.command("RCPT TO:<a@customer.example.net>")
        assert client.command("DATA").startswith("354")
        client.send((line + "\r\nSubject: Invoice\r\n\r\nPay now.\r\n.\r\n").encode())
        assert client.reply() == SHOWN_ELSEWHERE_REFUSAL
    finally:
        client.close()
    assert submissions().count() == 0
