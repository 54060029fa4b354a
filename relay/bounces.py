"""Asynchronous bounces and complaints: reports that come back to the return
path after a remote server had accepted a message.

With POSTERN_RETURN_PATH_DOMAIN set, every message leaves with its own return
path, bounces+QUEUEID@that-domain (VERP), so a report names the message by
the address it was sent to, whatever the reporting server put in its body.
"""

import email
import email.policy
import logging
import re
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction

from relay import suppression, webhooks
from relay.models import Message, MessageEvent, Recipient, Suppression

log = logging.getLogger("postern.bounces")

_VERP = re.compile(r"^bounces\+([0-9A-F]{16})@(.+)$", re.IGNORECASE)


def return_path_for(message):
    if not settings.RETURN_PATH_DOMAIN or not message.mail_from:
        return message.mail_from
    return f"bounces+{message.queue_id}@{settings.RETURN_PATH_DOMAIN}"


def queue_id_from(address):
    """The queue id in a return-path address of ours, or None."""
    match = _VERP.match(address.strip().strip("<>"))
    if not match or match.group(2).lower() != settings.RETURN_PATH_DOMAIN:
        return None
    return match.group(1).upper()


@dataclass
class RecipientReport:
    address: str
    action: str  # failed, delayed, delivered, relayed, expanded (RFC 3464 2.3.3)
    status: str
    diagnostic: str = ""


@dataclass
class Report:
    kind: str  # "delivery-status", "feedback-report" or "" when not a report
    recipients: list = field(default_factory=list)
    complained_about: str = ""


def parse_report(raw):
    """Read a multipart/report (RFC 6522): a delivery status notification
    (RFC 3464) or an abuse complaint (RFC 5965)."""
    mail = email.message_from_bytes(raw, policy=email.policy.compat32)
    if mail.get_content_type() != "multipart/report":
        return Report("")
    kind = (mail.get_param("report-type") or "").lower()
    report = Report(kind)
    for part in mail.walk():
        content_type = part.get_content_type()
        if content_type == "message/delivery-status":
            report.recipients += _recipient_reports(part)
        elif content_type == "message/feedback-report":
            fields = _fields(_part_text(part))
            report.complained_about = _address(fields.get("original-rcpt-to", ""))
    return report


def _part_text(part):
    payload = part.get_payload()
    if isinstance(payload, list):  # the email package parsed the blocks
        return "\n\n".join(block.as_string() for block in payload)
    return part.get_payload(decode=True).decode("utf-8", "replace")


def _recipient_reports(part):
    reports = []
    for block in re.split(r"\r?\n\s*\r?\n", _part_text(part)):
        fields = _fields(block)
        if "final-recipient" not in fields or "action" not in fields:
            continue  # the per-message block, or noise
        reports.append(
            RecipientReport(
                address=_address(fields["final-recipient"]),
                action=fields["action"].lower(),
                status=fields.get("status", "").split(" ")[0],
                diagnostic=fields.get("diagnostic-code", ""),
            )
        )
    return reports


def _fields(block):
    """Header-style lines with continuations into {lower-case name: value};
    the first occurrence wins."""
    fields, name = {}, None
    for line in block.splitlines():
        if line[:1] in (" ", "\t") and name:
            fields[name] += " " + line.strip()
            continue
        key, sep, value = line.partition(":")
        if sep and key.strip():
            name = key.strip().lower()
            if name in fields:
                name = None
                continue
            fields[name] = value.strip()
    return fields


def _address(value):
    """'rfc822; alice@example.net' or '<alice@example.net>' to the address."""
    value = value.split(";", 1)[-1]
    return value.strip().strip("<>").strip().lower()


def take_report(rcpt_to, raw):
    """Apply a report that arrived for rcpt_to. Returns a short description
    of what was done, for the log and the listener's reply."""
    queue_id = queue_id_from(rcpt_to)
    message = Message.objects.filter(queue_id=queue_id).first() if queue_id else None
    if message is None:
        log.info("event=report_unmatched")
        return "not for a known message"
    report = parse_report(raw)
    if report.kind == "feedback-report":
        return _take_complaint(message, report)
    if report.kind == "delivery-status":
        return _take_delivery_status(message, report)
    with transaction.atomic():
        _note(message, "report_ignored", "not a multipart/report")
    return "not a report"


def _take_delivery_status(message, report):
    outcomes = []
    for item in report.recipients:
        recipient = message.recipients.filter(address__iexact=item.address).first()
        if recipient is None:
            outcomes.append(f"{item.address}: not a recipient")
            continue
        if item.action == "failed":
            outcomes.append(_late_bounce(message, recipient, item))
        else:
            with transaction.atomic():
                _note(
                    message,
                    f"remote_{item.action}",
                    f"to={recipient.address} status={item.status}",
                )
            outcomes.append(f"{recipient.address}: {item.action}")
    return "; ".join(outcomes) or "no recipient in the report"


def _late_bounce(message, recipient, item):
    detail = f"late bounce: {item.status} {item.diagnostic}".strip()[:900]
    with transaction.atomic():
        Recipient.objects.filter(pk=recipient.pk).update(
            state=Recipient.BOUNCED, last_reply=detail
        )
        recipient.state = Recipient.BOUNCED
        _note(message, "bounced", f"to={recipient.address} {detail}")
        webhooks.announce(message, "bounced", recipient, detail)
        if suppression.is_hard_bounce(item.status):
            suppression.suppress(
                message.tenant_id,
                recipient.address,
                Suppression.HARD_BOUNCE,
                f"{message.queue_id}: {detail}",
            )
    return f"{recipient.address}: bounced"


def _take_complaint(message, report):
    address = report.complained_about
    if not address:
        # Complaint reports often leave the recipient out; with one
        # recipient there is no doubt who complained.
        only = list(message.recipients.values_list("address", flat=True)[:2])
        address = only[0] if len(only) == 1 else ""
    if not address:
        with transaction.atomic():
            _note(message, "complained", "recipient unknown")
        return "complaint without a recipient"
    recipient = message.recipients.filter(address__iexact=address).first()
    with transaction.atomic():
        suppression.suppress(
            message.tenant_id, address, Suppression.COMPLAINT, f"{message.queue_id}"
        )
        _note(message, "complained", f"to={address}")
        webhooks.announce(message, "complained", recipient, "abuse report")
    return f"{address}: complaint"


def _note(message, kind, detail):
    MessageEvent.objects.create(message=message, kind=kind, detail=detail)
    log.info("event=%s queue_id=%s", kind, message.queue_id)
