"""Building blocks for delivery tests: messages already queued for delivery
(as the processing half leaves them), recipient domains served by test MX
hosts, and the settings that point delivery at them."""

import email.utils

from policies.sender import address_domain
from relay.models import Message, Recipient
from tenants.models import Tenant


def make_tenant(name="Shop"):
    return Tenant.objects.create(name=name, status=Tenant.APPROVED)


def queue_message(
    tenant,
    recipients,
    mail_from="app@shop.example.test",
    subject="Invoice 1042",
    body="Your invoice is attached.",
    credential=None,
    envelope_params=None,
    recipient_params=None,
):
    """A message in state QUEUED with its bytes 'signed', and its recipients
    queued, as process_message leaves it."""
    raw = (
        f"From: Shop <{mail_from}>\r\nTo: {', '.join(recipients)}\r\n"
        f"Subject: {subject}\r\nDate: {email.utils.formatdate()}\r\n"
        f"Message-ID: {email.utils.make_msgid(domain='shop.example.test')}\r\n"
        f"\r\n{body}\r\n"
    ).encode()
    message = Message.objects.create(
        tenant=tenant,
        credential=credential,
        mail_from=mail_from,
        subject=subject,
        size=len(raw),
        raw=raw,
        signed=raw,
        state=Message.QUEUED,
        envelope_params=envelope_params or {},
    )
    for address in recipients:
        Recipient.objects.create(
            message=message,
            address=address,
            domain=address_domain(address),
            params=(recipient_params or {}).get(address, {}),
        )
    return message


def serve_domain(zone, domain, *mx_hosts):
    """MX records for domain: mx_hosts are (preference, host name, address)."""
    for preference, host, address in mx_hosts:
        zone.add_mx(domain, host, preference)
        zone.add_a(host, address)
    return domain


def recipient_states(message):
    return dict(message.recipients.values_list("address", "state"))
