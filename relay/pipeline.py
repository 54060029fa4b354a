"""The message pipeline, in the order a message goes through it.

process_message: claim → check the sender again → complete headers → DKIM
sign → queue for delivery. deliver_to_domain: claim the domain's recipients →
route → one SMTP session → settle each recipient. Both are safe to run twice
for the same message.
"""

import logging
import random
import uuid
from datetime import timedelta
from email.utils import format_datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from policies.sender import (
    address_domain,
    check_envelope_sender,
    check_header_sender,
    header_from_address,
    parse_headers,
    verified_domain_names,
)
from relay import routing, signing, smtp_client
from relay.dkim_canon import to_crlf
from relay.models import DeliveryAttempt, Message, MessageEvent, Recipient

log = logging.getLogger("postern.pipeline")


def record(message, kind, detail=""):
    MessageEvent.objects.create(message=message, kind=kind, detail=detail)
    log.info("event=%s queue_id=%s %s", kind, message.queue_id, detail)


# --- processing ---------------------------------------------------------


def process_message(message_id):
    message = claim_for_processing(message_id)
    if message is None:
        return

    headers = parse_headers(message.raw)
    refusal = recheck_sender(message, headers)
    if refusal:
        reject(message, str(refusal))
        return

    raw = to_crlf(complete_headers(message.raw, headers))
    try:
        key = signing.active_key(signing_domain(headers), message.tenant_id)
    except signing.NoSigningKey as exc:
        reject(message, f"550 5.7.1 Not signed: {exc}")
        return
    signed = signing.sign(raw, key) + raw

    if queue_for_delivery(message, signed, key):
        enqueue_deliveries(message.id)


def claim_for_processing(message_id):
    # The conditional update closes the race between two workers given the
    # same message (a redelivered task, or the sweeper's re-enqueue): only
    # one of them moves it out of RECEIVED.
    claimed = Message.objects.filter(pk=message_id, state=Message.RECEIVED).update(
        state=Message.PROCESSING, state_changed_at=timezone.now()
    )
    if not claimed:
        return None
    return Message.objects.select_related("tenant").get(pk=message_id)


def recheck_sender(message, headers):
    if not message.tenant.may_send:
        return f"550 5.7.1 Account {message.tenant.status}"
    domains = verified_domain_names(message.tenant_id)
    return check_envelope_sender(message.mail_from, domains) or check_header_sender(
        headers, domains
    )


def signing_domain(headers):
    return address_domain(header_from_address(headers))


def complete_headers(raw, headers):
    """Add Date and Message-ID when the client left them out (RFC 6409
    section 8)."""
    added = b""
    if headers.get("Date") is None:
        added += f"Date: {format_datetime(timezone.now())}\r\n".encode()
    if headers.get("Message-ID") is None:
        domain = settings.GATEWAY_HOSTNAME
        added += f"Message-ID: <{uuid.uuid4().hex}@{domain}>\r\n".encode()
    return added + raw


def reject(message, reason):
    with transaction.atomic():
        Message.objects.filter(pk=message.pk).update(
            state=Message.REJECTED, state_changed_at=timezone.now()
        )
        message.recipients.exclude(state__in=Recipient.FINAL_STATES).update(
            state=Recipient.BOUNCED, last_reply=reason
        )
        record(message, "rejected", reason)


def queue_for_delivery(message, signed, key):
    with transaction.atomic():
        moved = Message.objects.filter(pk=message.pk, state=Message.PROCESSING).update(
            state=Message.QUEUED, signed=signed, state_changed_at=timezone.now()
        )
        if moved:
            record(message, "signed", f"d={key.domain.name} s={key.selector}")
    return bool(moved)


def enqueue_deliveries(message_id):
    from relay.tasks import deliver

    domains = (
        Recipient.objects.filter(message_id=message_id, state=Recipient.QUEUED)
        .values_list("domain", flat=True)
        .distinct()
    )
    for domain in domains:
        deliver.delay(message_id, domain)


# --- delivery -----------------------------------------------------------


def deliver_to_domain(message_id, domain):
    token, recipients = claim_recipients(message_id, domain)
    if not recipients:
        return
    message = Message.objects.get(pk=message_id)

    try:
        hops = routing.hops_for(domain)
    except routing.RouteError as exc:
        code = 550 if exc.permanent else 451
        reply = smtp_client.Reply(code, f"{exc.status} {exc.text}")
        for rcpt in recipients:
            settle(message, rcpt, token, reply)
        finish_if_done(message)
        return

    pending = {rcpt.address: rcpt for rcpt in recipients}
    problem = None
    for hop in hops:
        started = timezone.now()
        try:
            result = smtp_client.deliver(
                hop,
                settings.DELIVERY_HELO,
                message.mail_from,
                list(pending),
                bytes(message.signed),
                settings.DELIVERY_TIMEOUT,
            )
        except smtp_client.ConnectionProblem as exc:
            problem = smtp_client.Reply(451, f"4.4.2 {hop.host}[{hop.address}]: {exc}")
            for rcpt in pending.values():
                record_attempt(rcpt, hop, problem, "", started)
            continue
        for address, reply in result.replies.items():
            rcpt = pending[address]
            record_attempt(rcpt, hop, reply, result.tls_version, started)
            settle(message, rcpt, token, reply)
        pending = {}
        break

    for rcpt in pending.values():
        settle(message, rcpt, token, problem)
    finish_if_done(message)


def claim_recipients(message_id, domain):
    # A claim token, set by one conditional update, marks the recipients this
    # run owns: two runs for the same domain (a redelivered task, the
    # sweeper) never both send to one recipient.
    token = uuid.uuid4()
    now = timezone.now()
    Recipient.objects.filter(
        message_id=message_id, domain=domain, message__state=Message.QUEUED
    ).filter(
        state__in=[Recipient.QUEUED, Recipient.DEFERRED]
    ).exclude(next_attempt_at__gt=now).update(
        state=Recipient.SENDING, claim_token=token, claimed_at=now
    )
    return token, list(Recipient.objects.filter(claim_token=token))


def record_attempt(rcpt, hop, reply, tls_version, started):
    DeliveryAttempt.objects.create(
        recipient=rcpt,
        remote_host=hop.host,
        remote_address=hop.address,
        reply_code=reply.code,
        reply_text=reply.text[:2000],
        tls_version=tls_version,
        started_at=started,
        duration_ms=int((timezone.now() - started).total_seconds() * 1000),
    )


def settle(message, rcpt, token, reply):
    now = timezone.now()
    attempts = rcpt.attempts + 1
    owned = Recipient.objects.filter(pk=rcpt.pk, claim_token=token)
    if reply.accepted:
        owned.update(state=Recipient.DELIVERED, delivered_at=now, attempts=attempts,
                     last_reply=str(reply), claim_token=None)
        record(message, "delivered", f"to={rcpt.address} reply={reply}")
    elif reply.permanent:
        owned.update(state=Recipient.BOUNCED, attempts=attempts, last_reply=str(reply),
                     claim_token=None)
        record(message, "bounced", f"to={rcpt.address} reply={reply}")
    elif now - message.created_at > timedelta(seconds=settings.DELIVERY_GIVE_UP):
        final = f"550 5.4.7 Delivery time expired; last reply: {reply}"
        owned.update(state=Recipient.BOUNCED, attempts=attempts, last_reply=final,
                     claim_token=None)
        record(message, "bounced", f"to={rcpt.address} reply={final}")
    else:
        retry_at = now + timedelta(seconds=retry_delay(attempts))
        owned.update(state=Recipient.DEFERRED, attempts=attempts, last_reply=str(reply),
                     next_attempt_at=retry_at, claim_token=None)
        record(message, "deferred",
               f"to={rcpt.address} reply={reply} retry_at={retry_at.isoformat()}")


def retry_delay(attempts):
    """Exponential back-off with jitter, so that retries after an outage do
    not all arrive at once."""
    base = settings.DELIVERY_FIRST_RETRY * 2 ** (attempts - 1)
    return min(base, settings.DELIVERY_MAX_BACKOFF) * random.uniform(0.8, 1.2)


def finish_if_done(message):
    unfinished = message.recipients.exclude(state__in=Recipient.FINAL_STATES).exists()
    if not unfinished:
        Message.objects.filter(pk=message.pk, state=Message.QUEUED).update(
            state=Message.DONE, state_changed_at=timezone.now()
        )
