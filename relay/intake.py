"""Durable intake: the submission is stored before the gateway answers 250,
then the pipeline is enqueued.

On PostgreSQL the message, its recipients and its "received" event go in as
one statement: one round trip, atomic by itself, committed when it returns.
Built through the ORM, the same rows took three INSERTs and a COMMIT, and
building them was the largest part of the gateway's CPU per message. Other
databases (SQLite under bin/dev) keep the ORM path. Both paths write the
same rows; tests/test_gateway_intake.py compares them, so a field added to
one of the models fails there until the statement writes it too.
"""

import json
import logging
from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from policies.sender import address_domain
from relay.models import Message, MessageEvent, Recipient, new_queue_id

log = logging.getLogger(__name__)

# The models' defaults (state, attempts, last_reply) are passed as parameters
# so that they are written here as the ORM would write them.
_INSERT_SUBMISSION = """
WITH message AS (
    INSERT INTO relay_message (
        queue_id, tenant_id, credential_id, mail_from, envelope_params,
        header_from, subject, size, client_address, raw, state,
        state_changed_at, created_at
    )
    VALUES (
        %(queue_id)s, %(tenant_id)s, %(credential_id)s, %(mail_from)s,
        %(envelope_params)s::jsonb, %(header_from)s, %(subject)s, %(size)s,
        %(client_address)s::inet, %(raw)s, %(message_state)s, %(now)s, %(now)s
    )
    RETURNING id
), recipients AS (
    INSERT INTO relay_recipient (
        message_id, address, domain, params, state, attempts, last_reply
    )
    SELECT message.id, rcpt.address, rcpt.domain, rcpt.params::jsonb,
        %(recipient_state)s, 0, ''
    FROM message, unnest(
        %(addresses)s::text[], %(domains)s::text[], %(params)s::text[]
    ) WITH ORDINALITY AS rcpt(address, domain, params, position)
    ORDER BY rcpt.position
), event AS (
    INSERT INTO relay_messageevent (message_id, kind, detail, created_at)
    SELECT message.id, 'received', %(detail)s, %(now)s FROM message
)
SELECT id FROM message
"""


@dataclass(frozen=True)
class Submission:
    """What the gateway has received, ready to be stored."""

    tenant_id: int
    credential_id: int | None
    mail_from: str
    envelope_params: dict
    rcpt_tos: list
    rcpt_params: list
    raw: bytes
    header_from: str
    subject: str
    client_address: str | None

    @property
    def received_detail(self):
        return f"{len(self.raw)} bytes for {len(self.rcpt_tos)} recipient(s)"


@dataclass(frozen=True)
class Accepted:
    id: int
    queue_id: str


def accept_message(
    *,
    tenant_id,
    credential_id,
    mail_from,
    rcpt_tos,
    raw,
    header_from,
    subject,
    client_address,
    envelope_params=None,
    rcpt_params=None,
):
    """Store a submission durably; returns its Accepted id and queue id.

    header_from and subject are the decoded field values, as the header
    registry shows them. envelope_params: the MAIL FROM parameters;
    rcpt_params: one dict of RCPT TO parameters per recipient, in the order
    of rcpt_tos."""
    submission = Submission(
        tenant_id=tenant_id,
        credential_id=credential_id,
        mail_from=mail_from,
        envelope_params=envelope_params or {},
        rcpt_tos=list(rcpt_tos),
        rcpt_params=list(rcpt_params or [{} for _ in rcpt_tos]),
        raw=raw,
        header_from=header_from[:998],
        subject=subject[:998],
        client_address=client_address,
    )
    if len(submission.rcpt_params) != len(submission.rcpt_tos):
        raise ValueError("one dict of RCPT parameters per recipient is needed")

    if connection.vendor == "postgresql":
        return _insert_in_one_statement(submission)
    return _insert_with_orm(submission)


def _insert_in_one_statement(submission):
    queue_id = new_queue_id()
    with connection.cursor() as cursor:
        cursor.execute(
            _INSERT_SUBMISSION,
            {
                "queue_id": queue_id,
                "tenant_id": submission.tenant_id,
                "credential_id": submission.credential_id,
                "mail_from": submission.mail_from,
                "envelope_params": json.dumps(submission.envelope_params),
                "header_from": submission.header_from,
                "subject": submission.subject,
                "size": len(submission.raw),
                "client_address": submission.client_address,
                "raw": submission.raw,
                "message_state": Message.RECEIVED,
                "now": timezone.now(),
                "addresses": submission.rcpt_tos,
                "domains": [address_domain(rcpt) for rcpt in submission.rcpt_tos],
                "params": [json.dumps(params) for params in submission.rcpt_params],
                "recipient_state": Recipient.QUEUED,
                "detail": submission.received_detail,
            },
        )
        (message_id,) = cursor.fetchone()
    return Accepted(id=message_id, queue_id=queue_id)


def _insert_with_orm(submission):
    with transaction.atomic():
        message = Message.objects.create(
            tenant_id=submission.tenant_id,
            credential_id=submission.credential_id,
            mail_from=submission.mail_from,
            envelope_params=submission.envelope_params,
            header_from=submission.header_from,
            subject=submission.subject,
            size=len(submission.raw),
            client_address=submission.client_address,
            raw=submission.raw,
        )
        Recipient.objects.bulk_create(
            Recipient(
                message=message,
                address=rcpt,
                domain=address_domain(rcpt),
                params=params,
            )
            for rcpt, params in zip(submission.rcpt_tos, submission.rcpt_params)
        )
        MessageEvent.objects.create(
            message=message, kind="received", detail=submission.received_detail
        )
    return Accepted(id=message.id, queue_id=message.queue_id)


def enqueue_processing(message):
    """Hand the message to the workers. A broker failure is not the client's
    problem: the message is committed, and the sweeper enqueues it again."""
    from relay.tasks import process_message

    try:
        process_message.delay(message.id)
    except Exception:
        log.exception("event=enqueue_failed queue_id=%s", message.queue_id)
