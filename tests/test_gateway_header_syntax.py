"""Header sections that could be read more than one way are refused at DATA,
before any field is judged or signed; raw bytes through the real gateway."""

import pytest

from tests.support.gateway import submissions
from tests.support.raw_smtp import authenticated
from tests.support.senders import make_sender

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def sender(zone):
    return make_sender(zone)


def submit(gateway, sender, data):
    """One transaction with data as the message; returns the reply to it."""
    client = authenticated(gateway, sender)
    try:
        assert client.command(f"MAIL FROM:<{sender.address}>").startswith("250")
        assert client.command("RCPT TO:<a@customer.example.net>").startswith("250")
        assert client.command("DATA").startswith("354")
        client.send(data + b".\r\n")
        reply = client.reply()
        # The session is still in step after a refusal.
        assert client.command("NOOP") == "250 2.0.0 OK"
        return reply
    finally:
        client.close()


@pytest.mark.parametrize("data, reply", [
    pytest.param(
        b"From: app@shop.example.test\r\nFrom : ceo@bank.example\r\n"
        b"Subject: Invoice\r\n\r\nPay now.\r\n",
        "550 5.6.0 Header line 2 has whitespace between the field name and the "
        "colon (obsolete, RFC 5322 3.6.8 and 4.5)",
        id="second-from-with-space-before-colon",
    ),
    pytest.param(
        b"Subject\t: Invoice\r\nFrom: app@shop.example.test\r\n\r\nPay now.\r\n",
        "550 5.6.0 Header line 1 has whitespace between the field name and the "
        "colon (obsolete, RFC 5322 3.6.8 and 4.5)",
        id="tab-before-colon",
    ),
    pytest.param(
        b"From: app@shop.example.test\r\nGarbageLineNoColon\r\n"
        b"From: ceo@bank.example\r\n\r\nPay now.\r\n",
        "550 5.6.0 Header line 2 has no colon; a blank line must separate the "
        "header section from the body (RFC 5322 2.2)",
        id="line-without-colon",
    ),
    pytest.param(
        b" From: ceo@bank.example\r\nFrom: app@shop.example.test\r\n\r\nPay.\r\n",
        "550 5.6.0 Header section begins with whitespace: line 1 is a continuation "
        "of no field (RFC 5322 2.2.3)",
        id="first-line-folded",
    ),
    pytest.param(
        b"From: app@shop.example.test\r\nSubject: Pay\x00 now\r\n\r\nPay now.\r\n",
        "550 5.6.0 Message contains a NUL octet (RFC 5322 2.2 and 3.5)",
        id="nul-in-header",
    ),
    pytest.param(
        b"From: app@shop.example.test\r\n\r\nPay\x00 now.\r\n",
        "550 5.6.0 Message contains a NUL octet (RFC 5322 2.2 and 3.5)",
        id="nul-in-body",
    ),
    pytest.param(
        b"From: app@shop.example.test\r\nX-T\xc3\xa9st: 1\r\n\r\nPay now.\r\n",
        "550 5.6.0 Header line 2 has a field name that is empty or not printable "
        "US-ASCII (RFC 5322 2.2)",
        id="8bit-field-name",
    ),
    pytest.param(
        b"From: app@shop.example.test\r\n: empty name\r\n\r\nPay now.\r\n",
        "550 5.6.0 Header line 2 has a field name that is empty or not printable "
        "US-ASCII (RFC 5322 2.2)",
        id="empty-field-name",
    ),
])
def test_ambiguous_header_sections_are_refused(gateway, sender, data, reply):
    assert submit(gateway, sender, data) == reply
    assert submissions().count() == 0


def test_folding_and_utf8_values_are_accepted(gateway, sender):
    """Continuation lines after the first, and UTF-8 in field values (RFC
    6532), are ordinary syntax; a colon later in the body means nothing."""
    data = (
        "From: Caf\u00e9 M\u00fcller <app@shop.example.test>\r\n"
        "Subject: Rechnung f\u00fcr\r\n\tDezember\r\n"
        "To: <a@customer.example.net>\r\n"
        "\r\n"
        "Note : this line is body text.\r\n"
    ).encode()
    assert submit(gateway, sender, data).startswith("250 2.0.0 Ok: queued as")
    assert bytes(submissions().get().raw) == data
