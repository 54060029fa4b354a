"""Who a message claims to be from, and whether the sender may claim it.

The gateway runs these checks at MAIL FROM and DATA so that a client learns of
a refusal at once; the worker runs them again before signing, because only the
database at that moment is authoritative.
"""

from dataclasses import dataclass
from email.headerregistry import Address
from email.parser import BytesHeaderParser
from email.policy import SMTP as SMTP_POLICY
from email.utils import getaddresses

from tenants.models import Domain


@dataclass(frozen=True)
class Refusal:
    """A refusal in SMTP terms; str() is the reply line."""

    code: int
    status: str
    text: str

    def __str__(self):
        return f"{self.code} {self.status} {self.text}"


def address_domain(address):
    """The lower-cased domain of an addr-spec, or '' when there is none."""
    _, at, domain = address.rpartition("@")
    return domain.strip().rstrip(".").lower() if at else ""


def verified_domain_names(tenant_id):
    return frozenset(
        Domain.objects.filter(tenant_id=tenant_id, verified_at__isnull=False)
        .values_list("name", flat=True)
    )


def check_envelope_sender(mail_from, domains):
    if mail_from == "":
        return Refusal(550, "5.7.1", "Null reverse-path is not accepted for submission")
    domain = address_domain(mail_from)
    if not domain:
        return Refusal(553, "5.1.7", "Sender address has no domain")
    if domain not in domains:
        return Refusal(
            550, "5.7.1", f"Sender domain {domain} is not a verified domain of this account"
        )
    return None


def parse_headers(raw):
    return BytesHeaderParser(policy=SMTP_POLICY).parsebytes(raw)


def header_from_address(headers):
    """The single address of the From header, or a Refusal.

    RFC 5322 section 3.6 allows exactly one From field; DMARC (RFC 7489
    section 6.6.1) cannot evaluate a message with several, so neither can we.
    """
    fields = headers.get_all("From") or []
    if len(fields) != 1:
        problem = "has no From header" if not fields else "has more than one From header"
        return Refusal(550, "5.6.0", f"Message {problem}")
    addresses = [addr for _, addr in getaddresses([str(fields[0])]) if addr]
    if len(addresses) != 1:
        return Refusal(550, "5.6.0", "From header must hold exactly one address")
    return addresses[0]


def check_header_sender(headers, domains):
    """Refuse a message whose From, Sender or Reply-To names a domain the
    tenant has not verified."""
    author = header_from_address(headers)
    if isinstance(author, Refusal):
        return author
    claimed = [("From", author)]
    for field in ("Sender", "Reply-To"):
        for value in headers.get_all(field) or []:
            claimed += [(field, addr) for _, addr in getaddresses([str(value)]) if addr]
    for field, address in claimed:
        domain = address_domain(address)
        if domain not in domains:
            return Refusal(
                550,
                "5.7.1",
                f"{field} domain {domain or '(none)'} is not a verified domain "
                "of this account",
            )
    return None


def is_plausible_recipient(address):
    try:
        parsed = Address(addr_spec=address)
    except (ValueError, IndexError, TypeError):
        return False
    return bool(parsed.username and parsed.domain and "." in parsed.domain.strip("."))
