"""Delivery status notifications (RFC 3464): the report that tells the
envelope sender a message could not be delivered, and the new message that
carries it.

Known limits: only failure reports are sent. Delay warnings (NOTIFY=DELAY)
and success reports (NOTIFY=SUCCESS to a server without the DSN extension)
are not; the parameters are passed on to servers that support DSN. Reports
are not DKIM-signed.
"""

import uuid
from email.utils import format_datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from policies.sender import address_domain
from relay.models import Message, MessageEvent, Recipient


def wants_failure_report(message, recipient):
    """RFC 3461 section 4.1: NOTIFY=NEVER means none; no NOTIFY means the
    default, which includes failures. A bounce is never bounced (RFC 5321
    section 4.5.5: no report to the null reverse-path)."""
    if not message.mail_from:
        return False
    notify = recipient.params.get("NOTIFY", "").upper().split(",")
    return notify == [""] or "FAILURE" in notify


def failure_report(message, recipients):
    """The bytes of a multipart/report for recipients that failed."""
    now = timezone.now()
    hostname = settings.GATEWAY_HOSTNAME
    boundary = f"=_report_{uuid.uuid4().hex}"
    returned = _returned_part(message)

    human = "\r\n".join(
        [
            "Your message could not be delivered to these recipients:",
            "",
            *[f"  {r.address}: {r.last_reply}" for r in recipients],
            "",
            f"Queue id: {message.queue_id}",
        ]
    )
    per_message = [f"Reporting-MTA: dns; {hostname}"]
    if message.envelope_params.get("ENVID"):
        per_message.append(f"Original-Envelope-Id: {message.envelope_params['ENVID']}")
    per_message.append(f"Arrival-Date: {format_datetime(message.created_at)}")
    blocks = ["\r\n".join(per_message)] + [_recipient_block(r) for r in recipients]

    headers = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{message.mail_from}>",
        "Subject: Undelivered mail returned to sender",
        f"Date: {format_datetime(now)}",
        f"Message-ID: <{uuid.uuid4().hex}@{hostname}>",
        # RFC 3834 section 5: so that auto-responders do not answer it.
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f"Content-Type: multipart/report; report-type=delivery-status; "
        f'boundary="{boundary}"',
    ]
    parts = [
        "Content-Type: text/plain; charset=utf-8\r\n\r\n" + human,
        "Content-Type: message/delivery-status\r\n\r\n" + "\r\n\r\n".join(blocks),
        returned,
    ]
    body = "".join(f"--{boundary}\r\n{part}\r\n" for part in parts)
    text = "\r\n".join(headers) + "\r\n\r\n" + body + f"--{boundary}--\r\n"
    return text.encode("utf-8")


def _recipient_block(recipient):
    reply = recipient.last_reply
    code, _, rest = reply.partition(" ")
    status = rest.split(" ", 1)[0] if rest[:2] in ("5.", "4.") else "5.0.0"
    lines = []
    if recipient.params.get("ORCPT"):
        lines.append(f"Original-Recipient: {recipient.params['ORCPT']}")
    lines += [
        f"Final-Recipient: rfc822; {recipient.address}",
        "Action: failed",
        # A 4.x.x reply at give-up time still ends in failure (RFC 3464
        # section 2.3.4 wants a 5.x.x status with "failed").
        f"Status: 5{status[1:]}",
        f"Diagnostic-Code: smtp; {' '.join(reply.split())[:900]}",
    ]
    return "\r\n".join(lines)


def _returned_part(message):
    """RET=FULL returns the whole message; otherwise its headers only (RFC
    3461 section 4.3 leaves the default to the MTA)."""
    raw = bytes(message.signed or message.raw)
    if message.envelope_params.get("RET", "").upper() == "FULL":
        content = raw.decode("utf-8", "replace")
        return "Content-Type: message/rfc822\r\n\r\n" + content
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    return "Content-Type: text/rfc822-headers\r\n\r\n" + head.decode("utf-8", "replace")


def queue_failure_report(message, recipients):
    """Queue the report as a message of its own, from the null reverse-path,
    delivered like any other. Returns it, or None when nobody wants one."""
    recipients = [r for r in recipients if wants_failure_report(message, r)]
    if not recipients:
        return None
    report = failure_report(message, recipients)
    with transaction.atomic():
        notice = Message.objects.create(
            tenant_id=message.tenant_id,
            credential=None,
            mail_from="",
            subject="Undelivered mail returned to sender",
            size=len(report),
            raw=report,
            signed=report,
            state=Message.QUEUED,
        )
        Recipient.objects.create(
            message=notice,
            address=message.mail_from,
            domain=address_domain(message.mail_from),
        )
        MessageEvent.objects.create(
            message=notice, kind="queued", detail=f"report on {message.queue_id}"
        )
        MessageEvent.objects.create(
            message=message, kind="report_queued", detail=f"queue_id={notice.queue_id}"
        )
        transaction.on_commit(lambda: _enqueue(notice))
    return notice


def _enqueue(notice):
    from relay.tasks import deliver

    deliver.delay(notice.pk, notice.recipients.get().domain)
