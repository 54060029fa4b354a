"""The submission protocol as a mail engineer checks it: raw command lines in,
exact replies out, against the real gateway process."""

import re
import smtplib
from pathlib import Path

import pytest

from relay.models import Recipient
from tests.support.clients import insecure_client_context, smtp_session, swaks
from tests.support.raw_smtp import RawSMTP, authenticated
from tests.support.senders import make_sender
from tests.support.gateway import submissions

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BODY = (
    "From: <app@shop.example.test>\r\nTo: <a@customer.example.net>\r\n"
    "Subject: Order 7\r\n\r\nYour order 7 has shipped.\r\n"
)


@pytest.fixture
def sender(zone):
    return make_sender(zone)


def ehlo_keywords(reply):
    return [line[4:].split()[0] for line in reply.splitlines()[1:]]


def test_before_tls_no_auth_is_offered_and_nothing_but_starttls_works(gateway):
    client = RawSMTP(gateway.submission_host, gateway.submission_port)
    try:
        assert client.greeting.startswith("220 localhost")
        keywords = ehlo_keywords(client.command("EHLO client.example.net"))
        assert "STARTTLS" in keywords
        assert "AUTH" not in keywords
        for line in ("MAIL FROM:<app@shop.example.test>", "AUTH PLAIN AGEAYg==",
                     "RCPT TO:<a@customer.example.net>", "DATA", "HELP"):
            assert client.command(line) == (
                "530 5.7.0 Must issue a STARTTLS command first"
            ), line
        assert client.command("NOOP") == "250 2.0.0 OK"
        assert client.command("QUIT") == "221 2.0.0 Bye"
    finally:
        client.close()


def test_after_tls_the_extensions_are_advertised(gateway):
    client = RawSMTP(gateway.submission_host, gateway.submission_port)
    try:
        client.command("EHLO client.example.net")
        client.starttls()
        keywords = ehlo_keywords(client.command("EHLO client.example.net"))
        assert set(keywords) >= {
            "SIZE", "8BITMIME", "SMTPUTF8", "AUTH", "PIPELINING",
            "ENHANCEDSTATUSCODES", "DSN",
        }
        assert "STARTTLS" not in keywords
        assert client.command("STARTTLS") == "503 5.5.1 TLS is already active"
    finally:
        client.close()


def test_no_relaying_without_auth(gateway, sender):
    """The open-relay checks: over TLS but without AUTH nothing is accepted,
    whatever the sender or recipient."""
    client = RawSMTP(gateway.submission_host, gateway.submission_port)
    try:
        client.command("EHLO client.example.net")
        client.starttls()
        client.command("EHLO client.example.net")
        for sender_address in (sender.address, "", "x@customer.example.net"):
            assert client.command(f"MAIL FROM:<{sender_address}>") == (
                "530 5.7.0 Authentication required"
            )
        assert client.command("RCPT TO:<victim@customer.example.net>") == (
            "530 5.7.0 Authentication required"
        )
        assert client.command("DATA") == "530 5.7.0 Authentication required"
    finally:
        client.close()
    relay_attempt = swaks(gateway, sender="x@customer.example.net",
                          to="victim@elsewhere.example.org")
    assert relay_attempt.returncode != 0
    assert "530 5.7.0" in relay_attempt.output
    assert submissions().count() == 0


def test_commands_one_by_one(gateway, sender):
    client = authenticated(gateway, sender)
    try:
        assert client.command("VRFY postmaster") == "502 5.5.1 VRFY is disabled"
        assert client.command("EXPN staff") == "502 5.5.1 EXPN is disabled"
        assert client.command("HELP").startswith("214 2.0.0 Commands:")
        assert client.command("NOOP") == "250 2.0.0 OK"
        assert client.command("RCPT TO:<a@customer.example.net>") == (
            "503 5.5.1 Need MAIL command first"
        )
        assert client.command("DATA") == "503 5.5.1 Error: need RCPT command"
        assert client.command(f"MAIL FROM:<{sender.address}>") == "250 2.1.0 Sender OK"
        assert client.command(f"MAIL FROM:<{sender.address}>") == (
            "503 5.5.1 Nested MAIL command"
        )
        assert client.command("RSET") == "250 2.0.0 OK"
        assert client.command("RCPT TO:<a@customer.example.net>") == (
            "503 5.5.1 Need MAIL command first"
        )
        assert client.command("MAIL FROM:<>") == (
            "550 5.7.1 Null reverse-path is not accepted for submission"
        )
        assert client.command("MAIL FROM:<broken") == (
            "553 5.1.3 Malformed address (RFC 5321 4.1.2)"
        )
        spaced = client.command("MAIL FROM:<a b@shop.example.test>")
        assert spaced.startswith("553 5.1.3")
        assert client.command("FOO bar").startswith("500 5.5.2")
        assert client.command("AUTH PLAIN AGEAYg==") == (
            "503 5.5.1 Already authenticated"
        )
        assert client.command("QUIT") == "221 2.0.0 Bye"
        assert client.closed_by_server()
    finally:
        client.close()


@pytest.mark.parametrize("params, reply", [
    ("SIZE=abc", "501 5.5.4 SIZE needs a number of octets"),
    ("SIZE=999999999999",
     "552 5.3.4 Message size exceeds the limit of 26214400 octets"),
    ("BODY=BINARYMIME", "501 5.5.4 BODY must be 7BIT or 8BITMIME"),
    ("RET=ALL", "501 5.5.4 RET must be FULL or HDRS"),
    ("ENVID=" + "a" * 101, "501 5.5.4 ENVID must be xtext of at most 100 characters"),
    ("SMTPUTF8=yes", "501 5.5.4 SMTPUTF8 takes no value"),
    ("RET=FULL RET=HDRS", "501 5.5.4 RET given twice"),
    ("XFORWARD=1", "555 5.5.4 MAIL FROM parameter XFORWARD is not supported"),
])
def test_bad_mail_parameters_get_a_precise_reply(gateway, sender, params, reply):
    client = authenticated(gateway, sender)
    try:
        assert client.command(f"MAIL FROM:<{sender.address}> {params}") == reply
    finally:
        client.close()


@pytest.mark.parametrize("params, reply", [
    ("NOTIFY=NEVER,SUCCESS",
     "501 5.5.4 NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY"),
    ("ORCPT=bob@x.test", "501 5.5.4 ORCPT must be addr-type;xtext"),
    ("FOO=1", "555 5.5.4 RCPT TO parameter FOO is not supported"),
])
def test_bad_rcpt_parameters_get_a_precise_reply(gateway, sender, params, reply):
    client = authenticated(gateway, sender)
    try:
        client.command(f"MAIL FROM:<{sender.address}>")
        assert client.command(f"RCPT TO:<a@customer.example.net> {params}") == reply
    finally:
        client.close()


def test_pipelined_transaction_with_dsn_parameters_is_stored(gateway, sender):
    """RFC 2920: the whole transaction in one write, replies in order; the DSN
    parameters (RFC 3461) are kept with the message for delivery."""
    client = authenticated(gateway, sender)
    try:
        client.send(
            f"MAIL FROM:<{sender.address}> RET=HDRS ENVID=Order+2B7 BODY=8BITMIME "
            "SIZE=300\r\n"
            "RCPT TO:<a@customer.example.net> NOTIFY=FAILURE,DELAY "
            "ORCPT=rfc822;A@customer.example.net\r\n"
            "RCPT TO:<b@customer.example.net>\r\n"
            "DATA\r\n"
        )
        assert [client.reply() for _ in range(4)] == [
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
            "250 2.1.5 Recipient OK",
            "354 End data with <CR><LF>.<CR><LF>",
        ]
        client.send(BODY.replace("shop.example.test", sender.domain.name) + ".\r\n")
        assert client.reply().startswith("250 2.0.0 Ok: queued as ")
    finally:
        client.close()

    message = submissions().get()
    assert message.envelope_params == {
        "RET": "HDRS", "ENVID": "Order+2B7", "BODY": "8BITMIME", "SIZE": 300,
    }
    params = dict(Recipient.objects.values_list("address", "params"))
    assert params == {
        "a@customer.example.net": {
            "NOTIFY": "FAILURE,DELAY", "ORCPT": "rfc822;A@customer.example.net",
        },
        "b@customer.example.net": {},
    }


def test_smtputf8_address_needs_the_parameter(gateway, sender):
    client = authenticated(gateway, sender)
    try:
        client.command(f"MAIL FROM:<{sender.address}>")
        assert client.command("RCPT TO:<jürgen@customer.example.net>") == (
            "553 5.6.7 A non-ASCII address needs SMTPUTF8 (RFC 6531)"
        )
        client.command("RSET")
        assert client.command(f"MAIL FROM:<{sender.address}> SMTPUTF8") == (
            "250 2.1.0 Sender OK"
        )
        assert client.command("RCPT TO:<jürgen@customer.example.net>") == (
            "250 2.1.5 Recipient OK"
        )
    finally:
        client.close()


def test_command_line_limit(gateway, sender):
    """RFC 5321 4.5.3.1.4: 512 octets, raised for MAIL by its extensions."""
    client = authenticated(gateway, sender)
    try:
        assert client.command("NOOP " + "x" * 600) == (
            "500 5.5.2 Command line too long (RFC 5321 4.5.3.1.4)"
        )
        # EHLO many times must not raise the limit (it did in the library).
        for _ in range(30):
            client.command("EHLO client.example.net")
        long_sender = "a" * 64 + "@" + sender.domain.name
        assert client.command(f"MAIL FROM:<{long_sender}> " + "X" * 700).startswith(
            "500 5.5.2 Command line too long"
        )
        assert client.command("NOOP") == "250 2.0.0 OK"
    finally:
        client.close()


def test_data_line_over_1000_octets_is_refused(gateway, sender):
    client = authenticated(gateway, sender)
    try:
        client.command(f"MAIL FROM:<{sender.address}>")
        client.command("RCPT TO:<a@customer.example.net>")
        client.command("DATA")
        client.send(f"From: <{sender.address}>\r\n\r\n" + "x" * 1200 + "\r\n.\r\n")
        assert client.reply() == (
            "500 5.5.2 Message line longer than 1000 octets (RFC 5321 4.5.3.1.6)"
        )
        assert client.command("NOOP") == "250 2.0.0 OK"
    finally:
        client.close()
    assert submissions().count() == 0


def test_smtplib_sends_8bit_and_utf8(gateway, sender):
    client = smtp_session(gateway, login=(sender.username, sender.secret))
    try:
        body = (
            f"From: Zoë <{sender.address}>\r\nTo: <jürgen@customer.example.net>\r\n"
            "Subject: Grüße\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\nDanke schön.\r\n"
        ).encode()
        refused = client.sendmail(
            sender.address, ["jürgen@customer.example.net"], body,
            mail_options=["SMTPUTF8", "BODY=8BITMIME"],
        )
        assert refused == {}
    finally:
        client.quit()
    message = submissions().get()
    assert bytes(message.raw).endswith("Danke schön.\r\n".encode())
    assert message.envelope_params["SMTPUTF8"] is True
    assert message.recipients.get().address == "jürgen@customer.example.net"


def test_swaks_over_starttls_with_auth_login(gateway, sender):
    result = swaks(gateway, "--auth", "LOGIN", sender=sender.address,
                   to="a@customer.example.net", auth=(sender.username, sender.secret))
    # swaks takes the last --auth given, so LOGIN replaces PLAIN here.
    assert result.returncode == 0, result.output
    assert "AUTH LOGIN" in result.output
    assert submissions().count() == 1


def test_smtplib_refuses_login_over_plain_text(gateway):
    client = smtplib.SMTP(gateway.submission_host, gateway.submission_port, timeout=10)
    try:
        client.ehlo("client.example.net")
        with pytest.raises(smtplib.SMTPNotSupportedError):
            client.login("pst_x", "secret")
        client.starttls(context=insecure_client_context())
        client.ehlo("client.example.net")
        assert "auth" in client.esmtp_features
    finally:
        client.close()


DATA_DIR = Path(__file__).parent / "data"


def corpus_message(name, sender):
    """A real message from tests/data, with CRLF line ends and its From moved
    to the sender's verified domain (the policy would refuse it otherwise)."""
    raw = (DATA_DIR / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return re.sub(rb"(?m)^From: [^\r\n]*", f"From: <{sender.address}>".encode(), raw,
                  count=1)


def test_a_real_8bit_multipart_message_is_stored_byte_for_byte(gateway, sender):
    original = corpus_message("flanker-8bitmime.eml", sender)
    client = smtp_session(gateway, login=(sender.username, sender.secret))
    try:
        client.sendmail(sender.address, ["xxx@customer.example.net"], original,
                        mail_options=["BODY=8BITMIME"])
    finally:
        client.quit()
    assert bytes(submissions().get().raw) == original


def test_line_length_limit_on_a_real_message(gateway, sender):
    """RFC 5321 4.5.3.1.6: a text line is at most 1000 octets with its CRLF.
    This message's HTML lines have 999 octets and CRLF, and it is refused;
    cut to 998 octets, the same message is accepted byte for byte."""
    over = corpus_message("flanker-long-links.eml", sender)
    at_limit = re.sub(rb"(?m)^([^\r\n]{998})[^\r\n]\r\n", rb"\1\r\n", over)
    assert max(len(line) for line in over.split(b"\r\n")) == 999
    assert max(len(line) for line in at_limit.split(b"\r\n")) == 998
    client = smtp_session(gateway, login=(sender.username, sender.secret))
    try:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail(sender.address, ["a@customer.example.net"], over)
        assert (refused.value.smtp_code, refused.value.smtp_error) == (
            500, b"5.5.2 Message line longer than 1000 octets (RFC 5321 4.5.3.1.6)"
        )
        client.sendmail(sender.address, ["a@customer.example.net"], at_limit)
    finally:
        client.quit()
    assert bytes(submissions().get().raw) == at_limit


def test_a_dot_stuffed_line_may_use_the_extra_octet(gateway, sender):
    """A line of 998 octets that starts with a dot travels as 999 (RFC 5321
    4.5.2) and is within the limit once the dot is taken off."""
    line = "." + "x" * 997
    client = authenticated(gateway, sender)
    try:
        client.command(f"MAIL FROM:<{sender.address}>")
        client.command("RCPT TO:<a@customer.example.net>")
        client.command("DATA")
        client.send(f"From: <{sender.address}>\r\n\r\n.{line}\r\n.\r\n")
        assert client.reply().startswith("250 2.0.0")
    finally:
        client.close()
    assert bytes(submissions().get().raw).endswith(f"\r\n{line}\r\n".encode())
