"""The message pipeline, in the order a message goes through it.

process_message: claim the message, and the received messages waiting behind
it → check each sender again → complete headers → DKIM sign → queue for
delivery → deliver at once (relay/delivery.py). Safe to run twice for the
same message.

Work goes in batches because the database round trips around a message cost
far more than the message itself: a batch's claim, look-ups and outcomes take
a few statements whatever its size (bench/README.md has the figures).
"""

import uuid
from email.utils import format_datetime

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, Value, When
from django.utils import timezone

from policies.sender import (
    address_domain,
    check_envelope_sender,
    check_header_sender,
    header_from_address,
    parse_headers,
    verified_domain_names,
)
from relay import signing, webhooks
from relay.delivery import deliver_due, within_batch_bytes
from relay.dkim_canon import to_crlf
from relay.events import record, record_all
from relay.models import Message, Recipient


def process_message(message_id):
    messages = claim_for_processing(message_id)
    if not messages:
        return

    lookups = SenderLookups()
    signed = []
    for message in messages:
        result = sign_message(message, lookups)
        if result is not None:
            signed.append((message, *result))

    queued = queue_for_delivery(signed)
    if queued:
        deliver_queued(queued)


def claim_for_processing(message_id):
    """The message, and while a backlog waits the received messages behind
    it, moved to PROCESSING for this run."""
    now = timezone.now()
    if not connection.features.has_select_for_update_skip_locked:
        # The conditional update closes the race between two workers given
        # the same message: only one of them moves it out of RECEIVED.
        claimed = Message.objects.filter(pk=message_id, state=Message.RECEIVED).update(
            state=Message.PROCESSING, state_changed_at=now
        )
        ids = [message_id] if claimed else []
    else:
        # Rows locked by another run are skipped, not waited for; a row that
        # run has moved on by the time the lock is taken is checked again
        # against state=RECEIVED, so two runs never claim one message.
        first = Case(When(pk=message_id, then=Value(0)), default=Value(1))
        with transaction.atomic():
            ids = within_batch_bytes(
                Message.objects.select_for_update(skip_locked=True)
                .filter(state=Message.RECEIVED)
                .order_by(first, "pk")
                .values_list("pk", "size")[: settings.PROCESSING_BATCH]
            )
            Message.objects.filter(pk__in=ids).update(
                state=Message.PROCESSING, state_changed_at=now
            )
    claimed = Message.objects.select_related("tenant").filter(pk__in=ids)
    return list(claimed.order_by("pk"))


class SenderLookups:
    """What one run looks up once per tenant instead of once per message."""

    def __init__(self):
        self._domains = {}
        self._keys = {}

    def verified_domains(self, tenant_id):
        if tenant_id not in self._domains:
            self._domains[tenant_id] = verified_domain_names(tenant_id)
        return self._domains[tenant_id]

    def signing_key(self, domain_name, tenant_id):
        if (domain_name, tenant_id) not in self._keys:
            try:
                key = signing.active_key(domain_name, tenant_id)
            except signing.NoSigningKey as exc:
                key = exc
            self._keys[domain_name, tenant_id] = key
        key = self._keys[domain_name, tenant_id]
        if isinstance(key, signing.NoSigningKey):
            raise key
        return key


def sign_message(message, lookups):
    """(signed bytes, key), or None when the message was rejected."""
    headers = parse_headers(message.raw)
    refusal = recheck_sender(message, headers, lookups)
    if refusal:
        reject(message, str(refusal))
        return None

    raw = to_crlf(received_header(message) + complete_headers(message.raw, headers))
    try:
        key = lookups.signing_key(signing_domain(headers), message.tenant_id)
    except signing.NoSigningKey as exc:
        reject(message, f"550 5.7.1 Not signed: {exc}")
        return None
    return signing.sign(raw, key) + raw, key


def recheck_sender(message, headers, lookups):
    if not message.tenant.may_send:
        return f"550 5.7.1 Account {message.tenant.status}"
    domains = lookups.verified_domains(message.tenant_id)
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


def queue_for_delivery(signed):
    """Store each (message, signed bytes, key) and queue it, in one
    transaction; returns the messages queued."""
    keys = {message.pk: (message, key) for message, _, key in signed}
    with transaction.atomic():
        moved = store_signed([(message.pk, data) for message, data, _ in signed])
        queued = [keys[pk] for pk in sorted(moved)]
        record_all(
            [(m, "signed", f"d={k.domain.name} s={k.selector}") for m, k in queued]
        )
        webhooks.announce_all([(m, "queued", None, "") for m, _ in queued])
    return [message for message, _ in queued]


# Only messages still in PROCESSING move on: one the sweeper gave back to
# RECEIVED meanwhile belongs to another run now.
QUEUE_SQL = """
UPDATE relay_message AS m
SET state = %s, signed = v.signed, state_changed_at = %s
FROM unnest(%s::bigint[], %s::bytea[]) AS v(id, signed)
WHERE m.id = v.id AND m.state = %s
RETURNING m.id
"""


def store_signed(items):
    """Store the signed bytes of each (message id, bytes) and move it to
    QUEUED; returns the ids moved."""
    now = timezone.now()
    if connection.vendor != "postgresql":
        # SQLite (the development default) has no arrays: a statement each.
        return {
            pk
            for pk, data in items
            if Message.objects.filter(pk=pk, state=Message.PROCESSING).update(
                state=Message.QUEUED, signed=data, state_changed_at=now
            )
        }
    ids, data = [pk for pk, _ in items], [d for _, d in items]
    with connection.cursor() as cursor:
        cursor.execute(
            QUEUE_SQL, [Message.QUEUED, now, ids, data, Message.PROCESSING]
        )
        return {row[0] for row in cursor.fetchall()}


def deliver_queued(messages):
    """Deliver to the first destination of the newly queued messages in this
    run (its batches include the others' recipients there); every further
    destination gets a task of its own, so that they go out in parallel."""
    from relay.tasks import deliver

    destinations_seen = {}
    pairs = Recipient.objects.filter(
        message_id__in=[m.pk for m in messages], state=Recipient.QUEUED
    ).values_list("message__tenant_id", "domain", "message_id")
    for tenant_id, domain, message_id in pairs.order_by("message_id"):
        destinations_seen.setdefault((tenant_id, domain), message_id)
    if not destinations_seen:
        return
    (first, *others) = destinations_seen.items()
    for (_, domain), message_id in others:
        deliver.delay(message_id, domain)
    (tenant_id, domain), _ = first
    deliver_due(domain, tenant_id)
