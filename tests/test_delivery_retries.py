"""Retries and bounces: temporary failures wait with back-off and then
bounce, permanent ones bounce at once; the envelope sender gets a DSN when it
asked for one; late bounces and complaints that come back to the return path
are tied to their message."""

import email
import smtplib
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from relay import bounces, delivery
from relay.models import Message, Recipient, Suppression
from tests.support.delivery_fixtures import mx_hosts, outbound  # noqa: F401
from tests.support.outbound import make_tenant, queue_message, serve_domain

pytestmark = pytest.mark.django_db

DATA = Path(__file__).parent / "data"
DOMAIN = "customer.example.net"
SENDER_DOMAIN = "shop.example.test"


@pytest.fixture
def remote(zone, outbound, mx_hosts):
    """The recipients' MX on 127.0.0.2, and the sender's own MX on 127.0.0.3
    (where DSNs go)."""
    serve_domain(zone, DOMAIN, (10, f"mx1.{DOMAIN}", "127.0.0.2"))
    serve_domain(zone, SENDER_DOMAIN, (10, f"mx.{SENDER_DOMAIN}", "127.0.0.3"))
    return mx_hosts("127.0.0.2"), mx_hosts("127.0.0.3")


def make_due(message):
    message.recipients.update(next_attempt_at=None)


def deliver_reports(message):
    """Deliver the DSNs queued for message, as their own tasks would."""
    for notice in Message.objects.filter(mail_from="", tenant=message.tenant):
        for domain in set(notice.recipients.values_list("domain", flat=True)):
            delivery.deliver_to_domain(notice.pk, domain)


def test_temporary_failure_is_retried_later_then_delivered(remote):
    mx, _ = remote
    mx.behaviour.rcpt_reply[f"alice@{DOMAIN}"] = "451 4.2.0 Try again later"
    message = queue_message(make_tenant(), [f"alice@{DOMAIN}"])

    before = timezone.now()
    delivery.deliver_to_domain(message.pk, DOMAIN)

    rcpt = message.recipients.get()
    assert rcpt.state == Recipient.DEFERRED
    assert rcpt.attempts == 1
    assert rcpt.last_reply == "451 4.2.0 Try again later"
    assert rcpt.next_attempt_at > before
    # Not due yet: a run now does nothing.
    delivery.deliver_to_domain(message.pk, DOMAIN)
    assert message.recipients.get().attempts == 1

    mx.behaviour.rcpt_reply.clear()
    make_due(message)
    delivery.deliver_to_domain(message.pk, DOMAIN)

    rcpt = message.recipients.get()
    assert rcpt.state == Recipient.DELIVERED
    assert list(
        rcpt.attempts_made.order_by("id").values_list("reply_code", flat=True)
    ) == [
        451,
        250,
    ]
    assert mx.recipients == [f"alice@{DOMAIN}"]


@pytest.mark.parametrize("attempts", [1, 2, 5, 12])
def test_back_off_doubles_with_jitter_up_to_the_cap(settings, attempts):
    settings.DELIVERY_FIRST_RETRY = 300
    settings.DELIVERY_MAX_BACKOFF = 4 * 3600
    expected = min(300 * 2 ** (attempts - 1), 4 * 3600)
    delays = {delivery.retry_delay(attempts) for _ in range(50)}
    assert all(0.8 * expected <= d <= 1.2 * expected for d in delays)
    assert len(delays) > 1  # jittered, not all the same


def test_temporary_failures_bounce_after_the_give_up_time(remote, settings):
    mx, sender_mx = remote
    mx.behaviour.rcpt_reply[f"bob@{DOMAIN}"] = "451 4.3.0 Still busy"
    message = queue_message(make_tenant(), [f"bob@{DOMAIN}"])
    Message.objects.filter(pk=message.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.DELIVERY_GIVE_UP + 60)
    )
    message.refresh_from_db()

    delivery.deliver_to_domain(message.pk, DOMAIN)

    rcpt = message.recipients.get()
    assert rcpt.state == Recipient.BOUNCED
    assert rcpt.last_reply.startswith("550 5.4.7 Delivery time expired")
    assert "451 4.3.0 Still busy" in rcpt.last_reply
    # Giving up is not the address's fault: it is not suppressed.
    assert not Suppression.objects.exists()
    deliver_reports(message)
    report = email.message_from_bytes(sender_mx.wait_for(1)[0].data)
    status = report.get_payload()[1].get_payload()[1]
    assert status["Status"] == "5.4.7"


def test_permanent_failure_bounces_at_once_with_a_dsn(remote):
    mx, sender_mx = remote
    mx.behaviour.rcpt_reply[f"gone@{DOMAIN}"] = "550 5.1.1 No such user"
    message = queue_message(
        make_tenant(),
        [f"gone@{DOMAIN}", f"here@{DOMAIN}"],
        envelope_params={"ENVID": "invoice-1042"},
        recipient_params={f"gone@{DOMAIN}": {"ORCPT": f"rfc822;gone@{DOMAIN}"}},
    )

    delivery.deliver_to_domain(message.pk, DOMAIN)

    states = dict(message.recipients.values_list("address", "state"))
    assert states == {
        f"gone@{DOMAIN}": Recipient.BOUNCED,
        f"here@{DOMAIN}": Recipient.DELIVERED,
    }
    assert mx.recipients == [f"here@{DOMAIN}"]
    assert message.events.filter(kind="bounced", detail__contains="gone@").exists()
    suppression = Suppression.objects.get(tenant=message.tenant)
    assert (suppression.entry, suppression.reason) == (f"gone@{DOMAIN}", "hard_bounce")

    deliver_reports(message)
    (sent,) = sender_mx.wait_for(1)
    assert sent.mail_from == "<>"  # the null reverse-path: a bounce is never bounced
    assert sent.rcpt_tos == [f"app@{SENDER_DOMAIN}"]
    report = email.message_from_bytes(sent.data)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert report["Auto-Submitted"] == "auto-replied"
    human, status, returned = report.get_payload()
    per_message, per_recipient = status.get_payload()
    assert per_message["Original-Envelope-Id"] == "invoice-1042"
    assert per_recipient["Final-Recipient"] == f"rfc822; gone@{DOMAIN}"
    assert per_recipient["Original-Recipient"] == f"rfc822;gone@{DOMAIN}"
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == "5.1.1"
    assert "550 5.1.1 No such user" in per_recipient["Diagnostic-Code"]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert "Subject: Invoice 1042" in returned.get_payload()
    assert "Your invoice is attached" not in returned.get_payload()


def test_notify_never_means_no_dsn_but_still_a_bounce_event(remote):
    mx, sender_mx = remote
    mx.behaviour.rcpt_reply[f"gone@{DOMAIN}"] = "550 5.1.1 No such user"
    message = queue_message(
        make_tenant(),
        [f"gone@{DOMAIN}"],
        recipient_params={f"gone@{DOMAIN}": {"NOTIFY": "NEVER"}},
    )

    delivery.deliver_to_domain(message.pk, DOMAIN)

    assert message.events.filter(kind="bounced").exists()
    assert not Message.objects.filter(mail_from="").exists()


def test_refused_data_bounces_every_accepted_recipient(remote):
    mx, _ = remote
    mx.behaviour.data_reply = "554 5.7.1 Message refused as spam"
    message = queue_message(make_tenant(), [f"a@{DOMAIN}", f"b@{DOMAIN}"])

    delivery.deliver_to_domain(message.pk, DOMAIN)

    for rcpt in message.recipients.all():
        assert rcpt.state == Recipient.BOUNCED
        assert rcpt.last_reply == "554 5.7.1 Message refused as spam"
    # Refused content says nothing against the addresses.
    assert not Suppression.objects.exists()
    assert Message.objects.get(pk=message.pk).state == Message.DONE


def test_connection_dropped_at_end_of_data_is_retried_once(remote):
    mx, _ = remote
    mx.behaviour.drop_at_end_of_data = True
    message = queue_message(make_tenant(), [f"carol@{DOMAIN}"])

    delivery.deliver_to_domain(message.pk, DOMAIN)

    rcpt = message.recipients.get()
    assert rcpt.state == Recipient.DEFERRED
    assert rcpt.last_reply.startswith("451 4.4.2 mx1.customer.example.net[127.0.0.2]")
    assert rcpt.data_sent_at is None
    assert mx.received == []

    mx.behaviour.drop_at_end_of_data = False
    make_due(message)
    delivery.deliver_to_domain(message.pk, DOMAIN)
    assert message.recipients.get().state == Recipient.DELIVERED
    assert mx.recipients == [f"carol@{DOMAIN}"]


def test_slow_server_is_waited_for_at_end_of_data(remote, settings):
    mx, _ = remote
    # Commands time out quickly, the end of data gets the long wait that
    # RFC 5321 section 4.5.3.2.6 asks for.
    settings.DELIVERY_TIMEOUT = 1
    settings.DELIVERY_DATA_TIMEOUT = 10
    mx.behaviour.slow_seconds = 1.5
    message = queue_message(make_tenant(), [f"dan@{DOMAIN}"])

    delivery.deliver_to_domain(message.pk, DOMAIN)

    assert message.recipients.get().state == Recipient.DELIVERED
    assert len(mx.received) == 1


def test_each_message_leaves_with_its_own_return_path(remote, settings):
    mx, _ = remote
    settings.RETURN_PATH_DOMAIN = "bounces.postern.test"
    message = queue_message(make_tenant(), [f"erin@{DOMAIN}"])

    delivery.deliver_to_domain(message.pk, DOMAIN)

    (sent,) = mx.wait_for(1)
    assert sent.mail_from == f"bounces+{message.queue_id}@bounces.postern.test"
    assert bounces.queue_id_from(sent.mail_from) == message.queue_id
    assert bounces.queue_id_from("bounces+0123456789ABCDEF@elsewhere.test") is None


def delivered_message(settings, address):
    settings.RETURN_PATH_DOMAIN = "bounces.postern.test"
    message = queue_message(make_tenant(), [address])
    Recipient.objects.filter(message=message).update(state=Recipient.DELIVERED)
    return message, bounces.return_path_for(message)


def test_late_bounce_from_a_real_dsn_is_tied_to_its_message(outbound, settings):
    message, return_path = delivered_message(settings, "user@example.net")
    raw = (DATA / "flanker-bounce-mailbox-full-dsn.eml").read_bytes()

    outcome = bounces.take_report(return_path, raw)

    assert outcome == "user@example.net: bounced"
    rcpt = message.recipients.get()
    assert rcpt.state == Recipient.BOUNCED
    assert "5.2.2" in rcpt.last_reply and "MAILBOX FULL" in rcpt.last_reply
    assert message.events.filter(
        kind="bounced", detail__contains="late bounce"
    ).exists()
    # A full mailbox is not a bad address: not suppressed.
    assert not Suppression.objects.exists()


def test_delay_warning_changes_nothing_but_is_noted(outbound, settings):
    message, return_path = delivered_message(settings, "recipient@example.net")
    raw = (DATA / "mail-report_422-dsn.eml").read_bytes()

    assert bounces.take_report(return_path, raw) == "recipient@example.net: delayed"
    assert message.recipients.get().state == Recipient.DELIVERED
    assert message.events.filter(kind="remote_delayed").exists()


def test_complaint_suppresses_the_recipient(outbound, settings):
    message, return_path = delivered_message(settings, "angry@example.net")
    raw = (
        "From: abuse@example.net\r\nTo: x\r\nSubject: complaint\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="b"\r\n'
        "\r\n--b\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n"
        "--b\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nUser-Agent: test/1.0\r\nVersion: 1\r\n"
        "Original-Rcpt-To: <angry@example.net>\r\n"
        "--b--\r\n"
    ).encode()

    assert bounces.take_report(return_path, raw) == "angry@example.net: complaint"
    entry = Suppression.objects.get(tenant=message.tenant)
    assert (entry.entry, entry.reason) == ("angry@example.net", Suppression.COMPLAINT)


def test_report_for_an_unknown_message_is_left_alone(outbound, settings):
    settings.RETURN_PATH_DOMAIN = "bounces.postern.test"
    raw = (DATA / "flanker-bounce-mailbox-full-dsn.eml").read_bytes()
    assert bounces.take_report(
        "bounces+0000000000000000@bounces.postern.test", raw
    ) == ("not for a known message")


@pytest.mark.django_db(transaction=True)
def test_bounce_listener_takes_reports_over_smtp(outbound, settings):
    from tests.support.bounce_listener import running_bounce_listener

    message, return_path = delivered_message(settings, "user@example.net")
    raw = (DATA / "flanker-bounce-mailbox-full-dsn.eml").read_bytes()

    with running_bounce_listener() as (host, port):
        with smtplib.SMTP(host, port, timeout=10) as client:
            client.ehlo("mx.example.net")
            code, text = client.docmd("MAIL", "FROM:<>")
            assert code == 250
            code, text = client.docmd("RCPT", "TO:<postmaster@bounces.postern.test>")
            assert (code, text[:5]) == (550, b"5.1.1")
            code, _ = client.docmd("RCPT", f"TO:<{return_path}>")
            assert code == 250
            # smtplib leaves the line ends of bytes alone.
            code, text = client.data(raw.replace(b"\n", b"\r\n"))
            assert (code, text) == (250, b"2.0.0 Report taken")

    assert message.recipients.get().state == Recipient.BOUNCED
