"""Durable intake: one transaction stores a submission before the gateway
answers 250, then the pipeline is enqueued."""

import logging

from django.db import transaction

from policies.sender import address_domain
from relay.models import Message, MessageEvent, Recipient

log = logging.getLogger(__name__)


def accept_message(*, tenant_id, credential_id, mail_from, rcpt_tos, raw, headers,
                   client_address, envelope_params=None, rcpt_params=None):
    """envelope_params: the MAIL FROM parameters; rcpt_params: one dict of RCPT
    TO parameters per recipient, in the order of rcpt_tos."""
    rcpt_params = rcpt_params or [{} for _ in rcpt_tos]
    with transaction.atomic():
        message = Message.objects.create(
            tenant_id=tenant_id,
            credential_id=credential_id,
            mail_from=mail_from,
            envelope_params=envelope_params or {},
            header_from=str(headers.get("From", ""))[:998],
            subject=str(headers.get("Subject", ""))[:998],
            size=len(raw),
            client_address=client_address,
            raw=raw,
        )
        Recipient.objects.bulk_create(
            Recipient(
                message=message,
                address=rcpt,
                domain=address_domain(rcpt),
                params=params,
            )
            for rcpt, params in zip(rcpt_tos, rcpt_params, strict=True)
        )
        MessageEvent.objects.create(
            message=message,
            kind="received",
            detail=f"{len(raw)} bytes for {len(rcpt_tos)} recipient(s)",
        )
    return message


def enqueue_processing(message):
    """Hand the message to the workers. A broker failure is not the client's
    problem: the message is committed, and the sweeper enqueues it again."""
    from relay.tasks import process_message

    try:
        process_message.delay(message.id)
    except Exception:
        log.exception("event=enqueue_failed queue_id=%s", message.queue_id)
