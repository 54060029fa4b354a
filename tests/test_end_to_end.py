"""One message, end to end, through real processes: swaks → gateway → worker →
the recipient domain's MX, found through the test DNS server."""

import email
import time

import dkim
import dns.resolver
import pytest
from django.test import Client

from policies.sender import address_domain
from relay.models import Message, Recipient
from tests.support.clients import smtp_session, swaks
from tests.support.senders import make_recipient_domain, make_sender
from tests.support.waiting import wait_until
from tenants.models import Membership, Tenant

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def dns_txt_from(dns_server):
    """A dkimpy dnsfunc that asks the test DNS server, as a receiver would."""

    def lookup(name, timeout=5):
        r = dns.resolver.Resolver(configure=False)
        r.nameservers, r.port = [dns_server.host], dns_server.port
        answer = r.resolve(name.decode().rstrip("."), "TXT")
        return b"".join(answer[0].strings)

    return lookup



def test_message_arrives_once_intact_and_dkim_signed(stack, zone, mx, dns_server):
    sender = make_sender(zone)
    rcpt_domain = make_recipient_domain(zone)
    body = "Your invoice 1042 for December is attached.\nTotal due: 99.00 EUR"

    sent = swaks(
        stack, sender=sender.address, to=f"alice@{rcpt_domain}", body=body,
        auth=(sender.username, sender.secret), headers=["Subject: Invoice 1042"],
    )
    assert sent.returncode == 0, sent.output
    assert "250 2.0.0 Ok: queued as" in sent.output

    received = mx.wait_for(1)
    assert len(received) == 1
    time.sleep(2)  # a duplicate would have arrived by now
    assert len(mx.received) == 1

    mail = received[0]
    assert mail.rcpt_tos == [f"alice@{rcpt_domain}"]
    assert mail.mail_from == sender.address
    parsed = email.message_from_bytes(mail.data)
    assert parsed["Subject"] == "Invoice 1042"
    assert parsed.get_payload().replace("\r\n", "\n").strip() == body

    # The trace field names the submission; it sits on top, under the signature.
    assert parsed.get_all("Received")[0].startswith("from [127.0.0.1]")
    assert f"ESMTPSA id {Message.objects.get().queue_id}" in parsed["Received"]
    assert dkim.verify(mail.data, dnsfunc=dns_txt_from(dns_server))
    tags = dkim.util.parse_tag_value(parsed["DKIM-Signature"].encode())
    assert tags[b"d"].decode() == sender.domain.name
    assert tags[b"s"].decode() == sender.key.selector
    # DMARC alignment: the signing domain is the From domain.
    from_domain = address_domain(email.utils.parseaddr(parsed["From"])[1])
    assert from_domain == tags[b"d"].decode()

    message = Message.objects.get()
    assert wait_until(lambda: Message.objects.get().state == Message.DONE)
    recipient = message.recipients.get()
    assert recipient.state == Recipient.DELIVERED
    assert recipient.attempts_made.get().reply_code == 250


def test_portal_shows_the_message_delivered(stack, zone, mx, django_user_model):
    sender = make_sender(zone)
    rcpt_domain = make_recipient_domain(zone)
    sent = swaks(stack, sender=sender.address, to=f"bob@{rcpt_domain}",
                 auth=(sender.username, sender.secret))
    assert sent.returncode == 0, sent.output
    mx.wait_for(1)
    message = Message.objects.get()
    assert wait_until(lambda: Message.objects.get().state == Message.DONE)

    user = django_user_model.objects.create_user("owner", password="pw-owner-1")
    Membership.objects.create(user=user, tenant=sender.tenant, role=Membership.OWNER)
    outsider = django_user_model.objects.create_user("outsider", password="pw-out-1")
    other = Tenant.objects.create(name="Other", status=Tenant.APPROVED)
    Membership.objects.create(user=outsider, tenant=other, role=Membership.OWNER)

    client = Client()
    client.force_login(user)
    page = client.get(f"/messages/{message.queue_id}/")
    assert page.status_code == 200
    assert b"Delivered" in page.content
    assert f"bob@{rcpt_domain}".encode() in page.content
    assert message.queue_id.encode() in client.get("/").content

    client.force_login(outsider)
    assert client.get(f"/messages/{message.queue_id}/").status_code == 404
    assert message.queue_id.encode() not in client.get("/").content


def test_auth_without_starttls_is_refused(stack, zone, mx):
    sender = make_sender(zone)
    client = smtp_session(stack, starttls=False)
    try:
        assert "auth" not in client.esmtp_features
        code, text = client.docmd("AUTH", "PLAIN " + "AGFwcABzZWNyZXQ=")
        assert (code, text[:5]) == (530, b"5.7.0")
    finally:
        client.close()
    plain = swaks(stack, sender=sender.address, to="x@customer.example.net",
                  auth=(sender.username, sender.secret), tls=False)
    assert plain.returncode != 0
    assert Message.objects.count() == 0


def test_wrong_secret_is_refused(stack, zone, mx):
    sender = make_sender(zone)
    result = swaks(stack, sender=sender.address, to="x@customer.example.net",
                   auth=(sender.username, sender.secret + "x"))
    assert result.returncode != 0
    assert "535 5.7.8" in result.output
    assert Message.objects.count() == 0


def test_unverified_envelope_sender_domain_is_refused(stack, zone, mx):
    sender = make_sender(zone)
    make_sender(zone, domain_name="other-tenant.example.test")
    result = swaks(stack, sender="app@other-tenant.example.test",
                   to="x@customer.example.net", auth=(sender.username, sender.secret))
    assert result.returncode != 0
    assert (
        "550 5.7.1 Sender domain other-tenant.example.test is not a verified"
        in result.output
    )
    assert Message.objects.count() == 0


def test_unverified_header_from_domain_is_refused(stack, zone, mx):
    sender = make_sender(zone)
    result = swaks(stack, sender=sender.address, to="x@customer.example.net",
                   auth=(sender.username, sender.secret),
                   headers=["From: Billing <billing@bank.example.org>"])
    assert result.returncode != 0
    assert "550 5.7.1 From domain bank.example.org is not a verified" in result.output
    assert Message.objects.count() == 0


def test_domain_without_dns_proof_cannot_send(stack, zone, mx):
    sender = make_sender(zone, publish_verification=False)
    result = swaks(stack, sender=sender.address, to="x@customer.example.net",
                   auth=(sender.username, sender.secret))
    assert "550 5.7.1" in result.output
    assert Message.objects.count() == 0


@pytest.mark.parametrize("status", [Tenant.PENDING, Tenant.SUSPENDED, Tenant.REJECTED])
def test_unapproved_tenant_cannot_authenticate(stack, zone, mx, status):
    sender = make_sender(zone, status=status)
    result = swaks(stack, sender=sender.address, to="x@customer.example.net",
                   auth=(sender.username, sender.secret))
    assert result.returncode != 0
    assert "535 5.7.8" in result.output
    assert Message.objects.count() == 0
    assert mx.received == []


def test_delivery_uses_starttls_when_the_mx_offers_it(stack, zone, gateway_tls,
                                                      delivery_port):
    import ssl

    from tests.support.mx import MXServer

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*gateway_tls)
    mx = MXServer("127.0.0.2", delivery_port, tls_context=context).start()
    try:
        sender = make_sender(zone)
        rcpt_domain = make_recipient_domain(zone, mx_address="127.0.0.2")
        sent = swaks(stack, sender=sender.address, to=f"carol@{rcpt_domain}",
                     auth=(sender.username, sender.secret))
        assert sent.returncode == 0, sent.output
        received = mx.wait_for(1)
        assert len(received) == 1 and received[0].tls
        assert wait_until(lambda: Message.objects.get().state == Message.DONE)
        attempt = Message.objects.get().recipients.get().attempts_made.get()
        assert attempt.tls_version.startswith("TLSv1.")
        assert attempt.remote_address == "127.0.0.2"
    finally:
        mx.stop()
