"""The message pipeline, in the order a message goes through it.

process_message: claim → check the sender again → complete headers → DKIM
sign → queue for delivery. deliver_to_domain: claim the domain's recipients →
drop the suppressed, hold development mail → route → take a connection slot
→ one SMTP session, over which further messages for the domain follow →
settle each recipient → report failures. Both are safe to run twice for the
same message.
"""

import logging
import random
import uuid
from dataclasses import dataclass
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
from relay import (
    bounces,
    destinations,
    dsn,
    routing,
    signing,
    smtp_client,
    suppression,
    webhooks,
)
from relay.dkim_canon import to_crlf
from relay.models import (
    DeliveryAttempt,
    Message,
    MessageEvent,
    Recipient,
    Suppression,
    TenantDeliverySettings,
)

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

    raw = to_crlf(received_header(message) + complete_headers(message.raw, headers))
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


def received_header(message):
    """The trace field every SMTP server adds at the top (RFC 5321 section
    4.4); ESMTPSA says the client used TLS and AUTH (RFC 3848)."""
    client = f"[{message.client_address}]" if message.client_address else "unknown"
    return (
        f"Received: from {client}\r\n\tby {settings.GATEWAY_HOSTNAME} (Postern) with "
        f"ESMTPSA id {message.queue_id};\r\n\t{format_datetime(message.created_at)}\r\n"
    ).encode()


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
            webhooks.announce(message, "queued")
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


@dataclass
class Batch:
    """The recipients of one message at one domain that one run owns."""

    message: Message
    token: uuid.UUID
    recipients: list


def deliver_to_domain(message_id, domain):
    batch = claim_batch(message_id, domain)
    if batch is None:
        return
    tenant_id = batch.message.tenant_id

    try:
        legs = routing.plan(domain, tenant_id)
    except routing.RouteError as exc:
        code = 550 if exc.permanent else 451
        settle_batch(batch, smtp_client.Reply(code, f"{exc.status} {exc.text}"))
        return

    slot = destinations.take_slot(domain)
    if slot is None:
        postpone(batch, "destination busy: connection limit reached")
        return
    try:
        deliver_over_one_session(legs, domain, batch)
    finally:
        destinations.release_slot(domain, slot)


def claim_batch(message_id, domain):
    """Claim the message's due recipients at domain, settle those that are
    suppressed or held, and return the rest as a Batch (None if none)."""
    token, recipients = claim_recipients(message_id, domain)
    if not recipients:
        return None
    message = Message.objects.select_related("credential").get(pk=message_id)

    recipients = drop_suppressed(message, recipients, token)
    if recipients and in_development_mode(message):
        hold(message, recipients, token)
        recipients = []
    if not recipients:
        finish_if_done(message)
        return None
    return Batch(message, token, recipients)


def claim_recipients(message_id, domain):
    # A claim token, set by one conditional update, marks the recipients this
    # run owns: two runs for the same domain (a redelivered task, the
    # sweeper, a run taking the message over an open session) never both send
    # to one recipient. The update filters on the recipient's own columns
    # only: a condition through a join would become a subquery that
    # PostgreSQL does not check again after waiting for the row lock, and
    # both runs would win.
    token = uuid.uuid4()
    now = timezone.now()
    if not Message.objects.filter(pk=message_id, state=Message.QUEUED).exists():
        return token, []
    Recipient.objects.filter(
        message_id=message_id,
        domain=domain,
        state__in=[Recipient.QUEUED, Recipient.DEFERRED],
    ).exclude(next_attempt_at__gt=now).update(
        state=Recipient.SENDING, claim_token=token, claimed_at=now
    )
    return token, list(Recipient.objects.filter(claim_token=token))


def drop_suppressed(message, recipients, token):
    kept = []
    for rcpt in recipients:
        entry = suppression.suppression_for(message.tenant_id, rcpt.address)
        if entry is None:
            kept.append(rcpt)
            continue
        reason = entry.get_reason_display()
        detail = f"on the suppression list: {entry.entry} ({reason})"
        with transaction.atomic():
            owned = Recipient.objects.filter(pk=rcpt.pk, claim_token=token).update(
                state=Recipient.SUPPRESSED, last_reply=detail, claim_token=None
            )
            if owned:
                record(message, "suppressed", f"to={rcpt.address} {detail}")
                webhooks.announce(message, "suppressed", rcpt, detail)
    return kept


def in_development_mode(message):
    if message.credential is not None and message.credential.development_mode:
        return True
    return TenantDeliverySettings.objects.filter(
        tenant_id=message.tenant_id, development_mode=True
    ).exists()


def hold(message, recipients, token):
    detail = "held: development mode"
    with transaction.atomic():
        owned = Recipient.objects.filter(pk__in=[r.pk for r in recipients])
        owned.filter(claim_token=token).update(
            state=Recipient.HELD, last_reply=detail, claim_token=None
        )
        for rcpt in recipients:
            record(message, "held", f"to={rcpt.address}")
            webhooks.announce(message, "held", rcpt, detail)


def deliver_over_one_session(legs, domain, batch):
    """Try the legs in order until one gives a session; send the batch, then
    further due messages of the same tenant for the same domain over that
    session (RFC 5321 section 3.3 allows many transactions per session)."""
    problem = None
    tenant_id = batch.message.tenant_id
    for leg in legs:
        started = timezone.now()
        sent = 0
        try:
            with smtp_client.Session(
                leg.hop, settings.DELIVERY_HELO, settings.DELIVERY_TIMEOUT,
                source_address=leg.source_address, tls=leg.tls,
                data_timeout=settings.DELIVERY_DATA_TIMEOUT,
            ) as session:
                refusal = session.open()
                if refusal is not None:
                    problem = refusal
                    record_attempts(batch, leg, refusal, "", started)
                    continue
                while batch is not None:
                    if not destinations.take_send_permit(domain):
                        postpone(batch, "destination busy: message rate limit reached")
                        return
                    send_batch(session, leg, batch, started)
                    sent += 1
                    started = timezone.now()
                    batch = None
                    if sent < settings.DELIVERY_MESSAGES_PER_SESSION:
                        batch = claim_next_batch(domain, tenant_id)
                return
        except smtp_client.ConnectionProblem as exc:
            # The batch in hand goes on to the next leg; those already sent
            # over this session are settled.
            hop = leg.hop
            where = f"{hop.host}[{hop.address}]"
            problem = smtp_client.Reply(451, f"{exc.status} {where}: {exc}")
            record_attempts(batch, leg, problem, "", started)
    settle_batch(batch, problem)


def send_batch(session, leg, batch, started):
    message = batch.message
    mail_options, rcpts = envelope_options(session, message, batch.recipients)

    def mark(accepted):
        mark_data_sent(batch, accepted)

    # A ConnectionProblem from here leaves the batch to the caller, which
    # tries it on the next leg or defers it.
    return_path = bounces.return_path_for(message)
    result = session.send(
        return_path, mail_options, rcpts, bytes(message.signed), mark
    )
    bounced = []
    for rcpt in batch.recipients:
        reply = result.replies[rcpt.address]
        record_attempt(rcpt, leg.hop, reply, session.tls_version, started)
        if settle(message, rcpt, batch.token, reply) == Recipient.BOUNCED:
            bounced.append(rcpt)
    after_settling(message, bounced)


def claim_next_batch(domain, tenant_id):
    """Another message of the tenant with recipients due at domain, claimed,
    or None. Only the same tenant's: the session's source address and TLS
    follow from the tenant's settings."""
    now = timezone.now()
    candidates = (
        Recipient.objects.filter(
            domain=domain, message__tenant_id=tenant_id, message__state=Message.QUEUED,
            state__in=[Recipient.QUEUED, Recipient.DEFERRED],
        )
        .exclude(next_attempt_at__gt=now)
        .order_by("message_id")
        .values_list("message_id", flat=True)
        .distinct()[:10]
    )
    for message_id in candidates:
        batch = claim_batch(message_id, domain)
        if batch is not None:
            return batch
    return None


def envelope_options(session, message, recipients):
    """MAIL and RCPT parameters for this message, as far as the server
    supports them: BODY (RFC 6152), SMTPUTF8 (RFC 6531) and the DSN
    parameters (RFC 3461), passed on so the server reports as asked."""
    params = message.envelope_params
    mail_options = []
    if session.supports("8bitmime"):
        mail_options.append("BODY=8BITMIME")
    if params.get("SMTPUTF8") and session.supports("smtputf8"):
        mail_options.append("SMTPUTF8")
    dsn_ok = session.supports("dsn")
    if dsn_ok and params.get("RET"):
        mail_options.append(f"RET={params['RET']}")
    if dsn_ok and params.get("ENVID"):
        mail_options.append(f"ENVID={smtp_client.xtext(params['ENVID'])}")

    rcpts = []
    for rcpt in recipients:
        options = []
        if dsn_ok and rcpt.params.get("NOTIFY"):
            options.append(f"NOTIFY={rcpt.params['NOTIFY']}")
        if dsn_ok and rcpt.params.get("ORCPT"):
            kind, _, address = rcpt.params["ORCPT"].partition(";")
            options.append(f"ORCPT={kind};{smtp_client.xtext(address)}")
        rcpts.append((rcpt.address, options))
    return mail_options, rcpts


def mark_data_sent(batch, accepted):
    # Written (and committed) right before the message and its end mark go
    # out. If the run dies after this, the sweeper finds the mark and does
    # not send again (sweeper.expire_claims). What remains: a run killed
    # between this commit and the write to the socket leaves a recipient
    # marked unconfirmed that never got the message; a run killed after the
    # server's 250 but before settle() leaves one that did. Either way it is
    # sent at most once and shown as unconfirmed, never silently.
    Recipient.objects.filter(
        claim_token=batch.token, address__in=accepted, message_id=batch.message.pk
    ).update(data_sent_at=timezone.now())


def record_attempts(batch, leg, reply, tls_version, started):
    for rcpt in batch.recipients:
        record_attempt(rcpt, leg.hop, reply, tls_version, started)


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


def settle_batch(batch, reply):
    bounced = [
        rcpt for rcpt in batch.recipients
        if settle(batch.message, rcpt, batch.token, reply) == Recipient.BOUNCED
    ]
    after_settling(batch.message, bounced)


def settle(message, rcpt, token, reply):
    """Record the outcome of an attempt for a recipient this run owns, and
    return its new state (None if the claim was lost)."""
    now = timezone.now()
    attempts = rcpt.attempts + 1
    if reply.accepted:
        state, changes = Recipient.DELIVERED, {"delivered_at": now}
    elif reply.permanent:
        state, changes = Recipient.BOUNCED, {}
    elif now - message.created_at > timedelta(seconds=settings.DELIVERY_GIVE_UP):
        state, changes = Recipient.BOUNCED, {}
        final = f"5.4.7 Delivery time expired; last reply: {reply}"
        reply = smtp_client.Reply(550, final)
    else:
        state = Recipient.DEFERRED
        changes = {"next_attempt_at": now + timedelta(seconds=retry_delay(attempts))}

    with transaction.atomic():
        owned = Recipient.objects.filter(pk=rcpt.pk, claim_token=token).update(
            state=state, attempts=attempts, last_reply=str(reply), claim_token=None,
            data_sent_at=None, **changes,
        )
        if not owned:
            return None
        rcpt.state, rcpt.last_reply = state, str(reply)
        detail = f"to={rcpt.address} reply={reply}"
        if state == Recipient.DEFERRED:
            detail += f" retry_at={changes['next_attempt_at'].isoformat()}"
        record(message, state, detail)
        webhooks.announce(message, state, rcpt, str(reply))
        if state == Recipient.BOUNCED:
            suppress_if_hard(message, rcpt, reply)
    return state


def suppress_if_hard(message, rcpt, reply):
    status = reply.text.split(" ", 1)[0]
    if suppression.is_hard_bounce(status):
        suppression.suppress(
            message.tenant_id, rcpt.address, Suppression.HARD_BOUNCE,
            f"{message.queue_id}: {reply}"[:500],
        )


def postpone(batch, reason):
    """Give the batch back without counting an attempt: it is tried again
    shortly, when the destination has room."""
    retry_at = timezone.now() + timedelta(seconds=settings.DESTINATION_RETRY)
    with transaction.atomic():
        Recipient.objects.filter(claim_token=batch.token).update(
            state=Recipient.DEFERRED, next_attempt_at=retry_at, claim_token=None
        )
        record(batch.message, "postponed", f"{reason}; retry_at={retry_at.isoformat()}")


def after_settling(message, bounced):
    if bounced:
        dsn.queue_failure_report(message, bounced)
    finish_if_done(message)


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
