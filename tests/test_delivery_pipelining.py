"""Command pipelining (RFC 2920): with a server that offers PIPELINING, MAIL,
every RCPT and DATA go out in one write; without it, one at a time. Either
way each recipient gets its own reply, and refusals leave the session usable
for the next message."""

import socket
import threading

import pytest

from relay import delivery
from relay.models import Recipient
from tests.support.delivery_fixtures import mx_hosts, outbound  # noqa: F401
from tests.support.outbound import make_tenant, queue_message, serve_domain

pytestmark = pytest.mark.django_db

DOMAIN = "customer.example.net"


@pytest.fixture(params=[True, False], ids=["pipelining", "in-turn"])
def server(request, zone, outbound, mx_hosts):
    serve_domain(zone, DOMAIN, (10, f"mx1.{DOMAIN}", "127.0.0.2"))
    return mx_hosts("127.0.0.2", pipelining=request.param)


def states(message):
    return dict(message.recipients.values_list("address", "state"))


def deliver_two(first_to, second_to):
    """Two messages of one tenant, delivered by one run; both went over one
    session."""
    tenant = make_tenant()
    first = queue_message(tenant, [first_to])
    second = queue_message(tenant, [second_to])
    delivery.deliver_to_domain(first.pk, DOMAIN)
    return first, second


def test_envelope_commands_are_pipelined_when_offered(server):
    addresses = [f"a@{DOMAIN}", f"b@{DOMAIN}", f"c@{DOMAIN}"]
    message = queue_message(make_tenant(), addresses)

    delivery.deliver_to_domain(message.pk, DOMAIN)

    assert server.recipients == addresses
    first_rcpt_unread = server.unread_at_rcpt[0]
    if server.pipelining:
        # When the first RCPT was read, the other two and DATA were already in.
        assert first_rcpt_unread.count(b"RCPT TO:") == 2
        assert first_rcpt_unread.endswith(b"DATA\r\n")
    else:
        assert first_rcpt_unread == b""


def test_the_next_envelope_goes_out_before_the_end_of_data_reply(server):
    # The server takes its time over each end of data; a pipelining client
    # has written the next message's envelope meanwhile.
    server.behaviour.slow_seconds = 0.3

    first, second = deliver_two(f"one@{DOMAIN}", f"two@{DOMAIN}")

    assert states(first) == {f"one@{DOMAIN}": Recipient.DELIVERED}
    assert states(second) == {f"two@{DOMAIN}": Recipient.DELIVERED}
    assert len({t.session for t in server.received}) == 1
    after_first = server.unread_at_end_of_data[0]
    if server.pipelining:
        assert after_first.startswith(b"MAIL FROM:<")
        assert after_first.endswith(b"DATA\r\n")
    else:
        assert after_first == b""


def test_each_recipient_gets_its_own_reply(server):
    server.behaviour.rcpt_reply[f"gone@{DOMAIN}"] = "550 5.1.1 No such user"
    server.behaviour.rcpt_reply[f"full@{DOMAIN}"] = "452 4.2.2 Mailbox full"
    tenant = make_tenant()
    addresses = [f"ok@{DOMAIN}", f"gone@{DOMAIN}", f"full@{DOMAIN}"]
    message = queue_message(tenant, addresses)

    delivery.deliver_to_domain(message.pk, DOMAIN)

    assert states(message) == {
        f"ok@{DOMAIN}": Recipient.DELIVERED,
        f"gone@{DOMAIN}": Recipient.BOUNCED,
        f"full@{DOMAIN}": Recipient.DEFERRED,
    }
    assert message.recipients.get(address=f"gone@{DOMAIN}").last_reply.startswith(
        "550 5.1.1"
    )
    assert server.recipients == [f"ok@{DOMAIN}"]


def test_a_message_whose_recipients_are_all_refused_leaves_the_session_usable(
    server,
):
    server.behaviour.rcpt_reply[f"gone@{DOMAIN}"] = "550 5.1.1 No such user"

    refused, accepted = deliver_two(f"gone@{DOMAIN}", f"next@{DOMAIN}")

    assert states(refused) == {f"gone@{DOMAIN}": Recipient.BOUNCED}
    assert states(accepted) == {f"next@{DOMAIN}": Recipient.DELIVERED}
    # Both went over one session: the refusal did not break it.
    assert len({t.session for t in server.received}) == 1
    assert server.recipients == [f"next@{DOMAIN}"]


def test_a_refused_sender_fails_every_recipient_with_that_reply(server):
    server.behaviour.mail_reply = "550 5.7.1 Sender refused here"
    message = queue_message(make_tenant(), [f"a@{DOMAIN}", f"b@{DOMAIN}"])

    delivery.deliver_to_domain(message.pk, DOMAIN)

    replies = dict(message.recipients.values_list("address", "last_reply"))
    assert replies == {
        f"a@{DOMAIN}": "550 5.7.1 Sender refused here",
        f"b@{DOMAIN}": "550 5.7.1 Sender refused here",
    }
    assert server.received == []


def test_a_reply_that_is_not_smtp_defers_the_message(server):
    server.behaviour.mail_reply = "hello there, I am not SMTP"
    message = queue_message(make_tenant(), [f"a@{DOMAIN}"])

    delivery.deliver_to_domain(message.pk, DOMAIN)

    rcpt = message.recipients.get()
    assert rcpt.state == Recipient.DEFERRED
    assert "unreadable reply from the server" in rcpt.last_reply
    assert list(rcpt.attempts_made.values_list("reply_code", flat=True)) == [451]


def test_a_refusal_stands_when_the_session_breaks_after_it(server):
    server.behaviour.rcpt_reply[f"gone@{DOMAIN}"] = "550 5.1.1 No such user"
    server.behaviour.drop_at_end_of_data = True
    message = queue_message(make_tenant(), [f"ok@{DOMAIN}", f"gone@{DOMAIN}"])

    delivery.deliver_to_domain(message.pk, DOMAIN)

    rcpts = {r.address: r for r in message.recipients.all()}
    assert rcpts[f"gone@{DOMAIN}"].state == Recipient.BOUNCED
    assert rcpts[f"gone@{DOMAIN}"].last_reply == "550 5.1.1 No such user"
    # The one whose data went out when the connection dropped is tried again.
    assert rcpts[f"ok@{DOMAIN}"].state == Recipient.DEFERRED
    assert rcpts[f"ok@{DOMAIN}"].last_reply.startswith("451 4.4.2")


def test_a_server_that_stops_making_sense_is_hung_up_on_without_quit(
    zone, outbound, delivery_port
):
    """After a reply it cannot read, the client drops the connection instead
    of sending QUIT and waiting out the command timeout for an answer that a
    confused server may never give."""
    serve_domain(zone, DOMAIN, (10, f"mx1.{DOMAIN}", "127.0.0.2"))
    listener = socket.create_server(("127.0.0.2", delivery_port))
    heard = []

    def confused_server():
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 mx1 ESMTP\r\n")
            lines.readline()  # EHLO
            conn.sendall(b"250-mx1\r\n250 PIPELINING\r\n")
            lines.readline()  # MAIL
            conn.sendall(b"hello there\r\n")
            heard.extend(iter(lines.readline, b""))  # until the client hangs up

    thread = threading.Thread(target=confused_server)
    thread.start()
    message = queue_message(make_tenant(), [f"a@{DOMAIN}"])
    try:
        delivery.deliver_to_domain(message.pk, DOMAIN)
    finally:
        thread.join(30)
        listener.close()

    assert not thread.is_alive()
    assert not any(line.upper().startswith(b"QUIT") for line in heard)
    assert message.recipients.get().state == Recipient.DEFERRED
