"""Suppressed recipients, development mode, and signed webhooks for every
state change."""

import hashlib
import hmac
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from relay import delivery, pipeline, suppression, webhooks
from relay.models import (
    Message,
    Recipient,
    Suppression,
    TenantDeliverySettings,
    WebhookPost,
)
from tenants.credentials import issue_credential
from tests.support.delivery_fixtures import mx_hosts, outbound  # noqa: F401
from tests.support.http_servers import LoopbackHTTP
from tests.support.outbound import (
    make_tenant,
    queue_message,
    recipient_states,
    serve_domain,
)
from tests.support.senders import make_sender

pytestmark = pytest.mark.django_db

DOMAIN = "customer.example.net"


@pytest.fixture
def server(zone, outbound, mx_hosts):
    serve_domain(zone, DOMAIN, (10, f"mx1.{DOMAIN}", "127.0.0.2"))
    return mx_hosts("127.0.0.2")


@pytest.fixture
def receiver():
    http = LoopbackHTTP().start()
    yield http
    http.stop()


def post_due():
    for post_id in webhooks.due_posts():
        webhooks.post(post_id)


def test_suppressed_addresses_and_domains_are_not_sent_to(server):
    tenant = make_tenant()
    suppression.suppress(tenant.pk, f"gone@{DOMAIN}", Suppression.MANUAL)
    suppression.suppress(tenant.pk, "blocked.example.net", Suppression.IMPORTED)
    other_tenant = make_tenant("Other")
    suppression.suppress(other_tenant.pk, f"keep@{DOMAIN}", Suppression.MANUAL)
    message = queue_message(tenant, [f"gone@{DOMAIN}", f"keep@{DOMAIN}"])

    delivery.deliver_to_domain(message.pk, DOMAIN)

    assert recipient_states(message) == {
        f"gone@{DOMAIN}": Recipient.SUPPRESSED,
        f"keep@{DOMAIN}": Recipient.DELIVERED,
    }
    assert server.recipients == [f"keep@{DOMAIN}"]
    event = message.events.get(kind="suppressed")
    assert event.detail == (
        f"to=gone@{DOMAIN} on the suppression list: gone@{DOMAIN} (Added by hand)"
    )

    blocked = queue_message(tenant, ["anyone@blocked.example.net"])
    delivery.deliver_to_domain(blocked.pk, "blocked.example.net")
    assert recipient_states(blocked) == {"anyone@blocked.example.net": "suppressed"}
    assert Message.objects.get(pk=blocked.pk).state == Message.DONE


@pytest.mark.parametrize(
    "raw, expected",
    [
        (" Alice@Example.NET ", "alice@example.net"),
        ("@Example.net", "example.net"),
        ("sub.example.net", "sub.example.net"),
    ],
)
def test_suppression_entries_are_normalised(raw, expected):
    assert suppression.normalise_entry(raw) == expected


@pytest.mark.parametrize(
    "raw, problem",
    [
        ("", "Enter an address or a domain."),
        ("alice@", "alice@ is not a valid address."),
        ("localhost", "localhost is not a valid domain."),
        ("bad_label.example", "bad_label.example is not a valid domain."),
    ],
)
def test_bad_suppression_entries_are_refused(raw, problem):
    with pytest.raises(ValueError) as refused:
        suppression.normalise_entry(raw)
    assert str(refused.value) == problem


def test_development_mode_credential_holds_mail(server):
    tenant = make_tenant()
    credential, _ = issue_credential(tenant, "Staging app")
    credential.development_mode = True
    credential.save()
    message = queue_message(
        tenant, [f"a@{DOMAIN}", f"b@{DOMAIN}"], credential=credential
    )

    delivery.deliver_to_domain(message.pk, DOMAIN)

    assert set(recipient_states(message).values()) == {Recipient.HELD}
    assert server.received == []
    assert message.events.filter(kind="held").count() == 2
    assert Message.objects.get(pk=message.pk).state == Message.DONE


def test_development_mode_tenant_holds_mail(server):
    tenant = make_tenant()
    TenantDeliverySettings.objects.create(tenant=tenant, development_mode=True)
    message = queue_message(tenant, [f"a@{DOMAIN}"])
    delivery.deliver_to_domain(message.pk, DOMAIN)
    assert recipient_states(message) == {f"a@{DOMAIN}": Recipient.HELD}
    assert server.received == []


def signature_ok(secret, post):
    header = post.headers["Postern-Signature"]
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(
        secret.encode(), f"{fields['t']}.".encode() + post.body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(fields["v1"], expected)


def test_webhook_is_signed_and_retried_until_accepted(server, receiver):
    tenant = make_tenant()
    webhooks.add_webhook(tenant, f"{receiver.url}/other-hook")
    _, secret = webhooks.add_webhook(tenant, f"{receiver.url}/hook")
    receiver.statuses = [503]  # the first post fails
    message = queue_message(tenant, [f"alice@{DOMAIN}"])
    delivery.deliver_to_domain(message.pk, DOMAIN)
    post_id = WebhookPost.objects.get(webhook__url__endswith="/hook").pk

    webhooks.post(post_id)
    pending = WebhookPost.objects.get(pk=post_id)
    assert (pending.state, pending.attempts, pending.last_status) == (
        "pending",
        1,
        "HTTP 503",
    )
    assert pending.next_attempt_at > timezone.now()

    WebhookPost.objects.filter(pk=post_id).update(next_attempt_at=timezone.now())
    post_due()
    assert WebhookPost.objects.get(pk=post_id).state == WebhookPost.SENT

    to_hook = [post for post, _ in receiver.posts if post.path == "/hook"]
    assert [status for post, status in receiver.posts if post.path == "/hook"] == [
        503,
        200,
    ]
    assert all(signature_ok(secret, post) for post in to_hook)
    assert not signature_ok(secret + "x", to_hook[0])
    body = json.loads(to_hook[-1].body)
    assert body["event_id"] == json.loads(to_hook[0].body)["event_id"]
    assert body["event"] == "delivered"
    assert body["queue_id"] == message.queue_id
    assert body["recipient"] == f"alice@{DOMAIN}"


def test_every_state_change_becomes_an_event(zone, server, receiver):
    sender = make_sender(zone)
    webhooks.add_webhook(sender.tenant, f"{receiver.url}/hook")
    suppression.suppress(sender.tenant.pk, f"gone@{DOMAIN}", Suppression.MANUAL)
    server.behaviour.rcpt_reply[f"later@{DOMAIN}"] = "451 4.2.0 Busy"
    server.behaviour.rcpt_reply[f"bad@{DOMAIN}"] = "550 5.1.1 Unknown"
    addresses = [f"ok@{DOMAIN}", f"later@{DOMAIN}", f"bad@{DOMAIN}", f"gone@{DOMAIN}"]
    raw = f"From: <{sender.address}>\r\nTo: x@{DOMAIN}\r\nSubject: Hi\r\n\r\nHello\r\n"
    message = Message.objects.create(
        tenant=sender.tenant, mail_from=sender.address, raw=raw.encode(), size=len(raw)
    )
    for address in addresses:
        Recipient.objects.create(message=message, address=address, domain=DOMAIN)

    pipeline.process_message(message.pk)
    delivery.deliver_to_domain(message.pk, DOMAIN)
    post_due()

    events = {
        (body["event"], body["recipient"])
        for body in (json.loads(p.body) for p, _ in receiver.posts)
    }
    assert events == {
        ("queued", None),
        ("delivered", f"ok@{DOMAIN}"),
        ("deferred", f"later@{DOMAIN}"),
        ("bounced", f"bad@{DOMAIN}"),
        ("suppressed", f"gone@{DOMAIN}"),
    }


def test_webhook_post_is_given_up_after_the_limit(server, settings):
    tenant = make_tenant()
    webhooks.add_webhook(tenant, "http://127.0.0.1:9/unreachable")
    message = queue_message(tenant, [f"alice@{DOMAIN}"])
    delivery.deliver_to_domain(message.pk, DOMAIN)
    WebhookPost.objects.update(
        created_at=timezone.now() - timedelta(seconds=settings.WEBHOOK_GIVE_UP + 1)
    )

    post_due()

    post = WebhookPost.objects.get()
    assert post.state == WebhookPost.FAILED
    assert post.last_status.startswith("URLError")


def test_add_webhook_command_prints_the_secret_once(receiver, server):
    from io import StringIO

    from django.core.management import call_command

    tenant = make_tenant()
    out = StringIO()
    call_command("add_webhook", str(tenant.pk), f"{receiver.url}/hook", stdout=out)
    secret = out.getvalue().split("secret=")[1].split()[0]

    message = queue_message(tenant, [f"alice@{DOMAIN}"])
    delivery.deliver_to_domain(message.pk, DOMAIN)
    post_due()
    ((post, status),) = receiver.posts
    assert status == 200 and signature_ok(secret, post)
