"""Signed webhooks: every state change of a message, posted to the tenant's
endpoints, retried with back-off until accepted.

Each event is written to an outbox (WebhookPost) in the same transaction as
the state change it reports, so that no event is lost when the post cannot
be made at once. The receiver checks

    Postern-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">

with its secret, and should refuse a timestamp more than a few minutes old
(that, with the signature, stops replays). A post is made at least once: a
worker that dies after the endpoint accepted but before recording it posts
again, so receivers drop an event_id they have seen.

Webhook URLs are added by staff (manage.py add_webhook), not by tenants:
posts come from inside the operator's network, and a tenant-chosen URL could
aim them at internal services.
"""

import hashlib
import hmac
import json
import logging
import random
import time
import urllib.error
import urllib.request
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from relay import secretbox
from relay.models import Webhook, WebhookPost

log = logging.getLogger("postern.webhooks")

# Posts go straight to the endpoint: no proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

EVENTS = (
    "queued",
    "deferred",
    "delivered",
    "bounced",
    "suppressed",
    "held",
    "unconfirmed",
    "complained",
)
FIRST_RETRY = 30
MAX_BACKOFF = 3600


def add_webhook(tenant, url):
    """A new endpoint and its secret, which is shown once."""
    secret = "whsec_" + secretbox.new_secret()
    webhook = Webhook.objects.create(
        tenant=tenant, url=url, sealed_secret=secretbox.seal(secret.encode())
    )
    return webhook, secret


def announce(message, event, recipient=None, detail=""):
    """Queue the event for every enabled webhook of the message's tenant."""
    announce_all([(message, event, recipient, detail)])


def announce_all(events):
    """Queue many events, each (message, event, recipient or None, detail),
    with one look-up of the endpoints and one insert."""
    if not events:
        return
    tenant_ids = {message.tenant_id for message, *_ in events}
    endpoints = {}
    for webhook in Webhook.objects.filter(tenant_id__in=tenant_ids, enabled=True):
        endpoints.setdefault(webhook.tenant_id, []).append(webhook)
    if not endpoints:
        return
    now = timezone.now()
    posts = []
    for message, event, recipient, detail in events:
        body = json.dumps(
            {
                "event": event,
                "event_id": uuid.uuid4().hex,
                "queue_id": message.queue_id,
                "recipient": recipient.address if recipient else None,
                "detail": detail,
                "at": now.isoformat(),
            },
            sort_keys=True,
        )
        posts += [
            WebhookPost(webhook=w, event=event, body=body, next_attempt_at=now)
            for w in endpoints.get(message.tenant_id, [])
        ]
    posts = WebhookPost.objects.bulk_create(posts)
    ids = [post.pk for post in posts]
    transaction.on_commit(lambda: _enqueue(ids))


def _enqueue(ids):
    from relay.tasks import post_webhook

    for post_id in ids:
        post_webhook.delay(post_id)


def sign(secret, timestamp, body):
    mac = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def post(post_id):
    """Make one attempt at a due post. Safe to run twice: the claim below lets
    one run at a time have it."""
    now = timezone.now()
    lease = now + timedelta(seconds=settings.WEBHOOK_TIMEOUT * 3)
    claimed = WebhookPost.objects.filter(
        pk=post_id, state=WebhookPost.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=lease)
    if not claimed:
        return
    item = WebhookPost.objects.select_related("webhook").get(pk=post_id)
    outcome = _send(item)
    attempts = item.attempts + 1
    if outcome is None:
        WebhookPost.objects.filter(pk=post_id).update(
            state=WebhookPost.SENT, attempts=attempts, last_status="accepted"
        )
        log.info("event=webhook_sent post=%s kind=%s", post_id, item.event)
        return
    if now - item.created_at > timedelta(seconds=settings.WEBHOOK_GIVE_UP):
        WebhookPost.objects.filter(pk=post_id).update(
            state=WebhookPost.FAILED, attempts=attempts, last_status=outcome[:200]
        )
        log.warning("event=webhook_given_up post=%s status=%s", post_id, outcome)
        return
    delay = min(FIRST_RETRY * 2 ** (attempts - 1), MAX_BACKOFF) * random.uniform(
        0.8, 1.2
    )
    WebhookPost.objects.filter(pk=post_id).update(
        attempts=attempts,
        last_status=outcome[:200],
        next_attempt_at=timezone.now() + timedelta(seconds=delay),
    )
    log.info("event=webhook_retry post=%s status=%s", post_id, outcome)


def _send(item):
    """None when the endpoint accepted (2xx), else what went wrong."""
    secret = secretbox.unseal(item.webhook.sealed_secret).decode()
    timestamp = int(time.time())
    request = urllib.request.Request(
        item.webhook.url,
        data=item.body.encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "Postern-Webhook",
            "Postern-Signature": sign(secret, timestamp, item.body),
            "Postern-Event": item.event,
        },
    )
    try:
        with _OPENER.open(request, timeout=settings.WEBHOOK_TIMEOUT) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    return None if 200 <= status < 300 else f"HTTP {status}"


def due_posts():
    return list(
        WebhookPost.objects.filter(
            state=WebhookPost.PENDING, next_attempt_at__lte=timezone.now()
        ).values_list("pk", flat=True)[:1000]
    )
