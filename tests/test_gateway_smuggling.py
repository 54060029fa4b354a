"""SMTP smuggling: one submission must stay one message. Every fake
end-of-data sequence is sent inside a real transaction over a raw socket;
the gateway must refuse the whole submission (a bare CR or LF is never a
line ending, RFC 5321 2.3.8) and must never act on the smuggled commands."""

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.support.clients import insecure_client_context
from tests.support.raw_smtp import RawSMTP, authenticated
from tests.support.senders import make_sender
from tests.support.gateway import submissions

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BARE_ENDING_REFUSAL = (
    "550 5.6.0 Message contains a bare CR or LF; lines must end with CRLF "
    "(RFC 5321 2.3.8)"
)

# The fake end-of-data sequences published for SMTP smuggling, and variants.
FAKE_ENDINGS = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r",
    b"\r\n.\r",
    b"\r.\r\n",
    b"\r\n.\n",
    b"\n.\r",
    b"\r.\n",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
    b"\n\n.\n\n",
    b"\r\r\n.\r\r\n",
]


@pytest.fixture
def sender(zone):
    return make_sender(zone)


def header(sender):
    return (
        f"From: <{sender.address}>\r\nTo: <a@customer.example.net>\r\n"
        "Subject: Statement\r\n\r\nFirst part.\r\n"
    ).encode()


def smuggled(sender):
    """The commands an attacker hides after a fake end of data."""
    return (
        f"MAIL FROM:<{sender.address}>\r\nRCPT TO:<victim@customer.example.net>\r\n"
        f"DATA\r\nFrom: <{sender.address}>\r\nSubject: smuggled\r\n\r\nSmuggled.\r\n"
    ).encode()


def send_transaction(client, sender, data):
    for line in (f"MAIL FROM:<{sender.address}>", "RCPT TO:<a@customer.example.net>"):
        assert client.command(line).startswith("250"), line
    assert client.command("DATA").startswith("354")
    client.send(data)


NUL_REFUSAL = "550 5.6.0 Message contains a NUL octet (RFC 5322 2.2 and 3.5)"


@pytest.mark.parametrize("ending", FAKE_ENDINGS, ids=repr)
def test_fake_end_of_data_never_splits_a_message(gateway, sender, ending):
    client = authenticated(gateway, sender)
    try:
        send_transaction(client, sender, header(sender) + ending + smuggled(sender)
                         + b".\r\n")
        first = client.reply()
        # The connection is still in step: the next command gets its own reply.
        assert client.command("NOOP") == "250 2.0.0 OK"
    finally:
        client.close()
    if b"\x00" in ending and b"\r\n.\r\n" not in ending:
        # No bare CR or LF, but a NUL: the whole submission is refused as one
        # message, the smuggled commands with it.
        assert first == NUL_REFUSAL
        assert submissions().count() == 0
    else:
        assert first == BARE_ENDING_REFUSAL
        assert submissions().count() == 0
    assert not submissions().filter(recipients__address__startswith="victim").exists()


def test_a_real_end_of_data_ends_the_message(gateway, sender):
    """The control case: with a real CRLF.CRLF the client did send two
    messages, pipelined, and two are accepted."""
    client = authenticated(gateway, sender)
    try:
        send_transaction(client, sender, header(sender) + b".\r\n" + smuggled(sender)
                         + b".\r\n")
        assert client.reply().startswith("250 2.0.0 Ok: queued as")
        assert [client.reply() for _ in range(4)][0] == "250 2.1.0 Sender OK"
    finally:
        client.close()
    assert submissions().count() == 2


@pytest.mark.parametrize("body", [
    b"Line one\nLine two\r\n",
    b"Line one\rLine two\r\n",
    b"Ends with a bare LF\n",
])
def test_bare_line_endings_anywhere_are_refused(gateway, sender, body):
    client = authenticated(gateway, sender)
    try:
        # "\n.\r\n" at the end is no end of data either: only CRLF.CRLF is.
        send_transaction(client, sender, header(sender) + body + b"\r\n.\r\n")
        assert client.reply() == BARE_ENDING_REFUSAL
    finally:
        client.close()
    assert submissions().count() == 0


def test_commands_buffered_before_starttls_are_discarded(gateway, sender):
    """RFC 3207 section 4.2: anything sent with STARTTLS before the handshake
    is thrown away; a man in the middle cannot inject commands that then run
    inside the encrypted session."""
    client = RawSMTP(gateway.submission_host, gateway.submission_port)
    try:
        client.command("EHLO client.example.net")
        client.send(
            "STARTTLS\r\nEHLO injected.example\r\n"
            f"AUTH PLAIN AGEAYg==\r\nMAIL FROM:<{sender.address}>\r\n"
        )
        assert client.reply() == "220 2.0.0 Ready to start TLS"
        client.sock = insecure_client_context().wrap_socket(client.sock)
        # The first reply inside TLS answers our NOOP, not an injected command.
        assert client.command("NOOP") == "250 2.0.0 OK"
        assert client.command("MAIL FROM:<x@y.example>") == (
            "503 5.5.1 Error: send HELO first"
        )
    finally:
        client.close()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=400) | st.lists(
    st.sampled_from([b"\r", b"\n", b".", b"\r\n", b"\x00", b"MAIL FROM:<a@b.c>", b"x"]),
    max_size=40,
).map(b"".join))
def test_random_data_never_makes_two_messages(gateway, sender, payload):
    """Whatever bytes come before the real end of data, at most one message
    is stored per transaction, and the server stays in step."""
    data = header(sender) + payload + b"\r\n.\r\n"
    # A payload holding a real CRLF.CRLF ends the message there, as the client
    # asked; that is pipelining, not smuggling.
    assume(data.find(b"\r\n.\r\n") == len(data) - 5)
    before = submissions().count()
    tracebacks = gateway.process.output().count("Traceback")
    client = authenticated(gateway, sender)
    try:
        send_transaction(client, sender, data)
        reply = client.reply()
        assert reply[:3] in ("250", "550", "500", "554"), reply
        assert client.command("NOOP") == "250 2.0.0 OK"
    finally:
        client.close()
    assert submissions().count() - before <= 1
    assert gateway.process.output().count("Traceback") == tracebacks
