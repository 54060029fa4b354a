"""Who a message claims to be from, and whether the sender may claim it.

The gateway runs these checks at MAIL FROM and DATA so that a client learns of
a refusal at once; the worker runs them again before signing, because only the
database at that moment is authoritative.

A credential may narrow what its tenant may claim with identity patterns, one
per line: `billing@shop.example.com` or `*@shop.example.com`. The `*` stands
for any local part (or part of one); the domain is matched exactly, so a
subdomain must be listed on its own. Whatever a pattern says, an address is
only ever allowed at a domain the tenant has verified.
"""

import re
import unicodedata
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import SMTP as SMTP_POLICY
from email.utils import getaddresses
from functools import lru_cache

from tenants.models import Domain

# An address written inside a display name or a comment, e.g.
# "billing@bank.example" in `"billing@bank.example" <x@shop.example>`: readers
# see it, DMARC does not. Labels may be Unicode, as a reader shows them.
_ADDRESS_IN_TEXT = re.compile(r"[^\s<>\"'@,;:()]+@([\w-]+(?:\.[\w-]+)+)")
# RFC 2047 encoded words, which readers decode in phrases and comments alike.
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
# Characters that readers show as "@" or "." without being them. NFKC folds the
# full-width and small forms (U+FF20, U+FE6B, U+FF0E); the ideographic full
# stops, which RFC 3490 section 3.1 counts as dots, it leaves alone.
_LOOKALIKE_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


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


def parse_identity_patterns(text):
    """The non-empty, lower-cased lines of a credential's allowed_identities."""
    lines = (line.strip().lower() for line in (text or "").splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


def _pattern_matches(pattern, address):
    local_pattern, at, domain_pattern = pattern.rpartition("@")
    if not at:
        return False
    local, _, domain = address.lower().rpartition("@")
    if domain.rstrip(".") != domain_pattern:
        return False
    regex = ".*".join(re.escape(part) for part in local_pattern.split("*"))
    return re.fullmatch(regex, local) is not None


def may_claim(address, domains, identities=()):
    """Whether a sender with these verified domains and identity patterns may
    use this address."""
    if address_domain(address) not in domains:
        return False
    if not identities:
        return True
    return any(_pattern_matches(pattern, address) for pattern in identities)


def _not_allowed(what, address, domains):
    domain = address_domain(address)
    if domain not in domains:
        return Refusal(
            550,
            "5.7.1",
            f"{what} domain {domain or '(none)'} is not a verified domain "
            "of this account",
        )
    return Refusal(
        550, "5.7.1", f"{what} {address} is not an identity this credential may use"
    )


def check_envelope_sender(mail_from, domains, identities=()):
    if mail_from == "":
        return Refusal(550, "5.7.1", "Null reverse-path is not accepted for submission")
    if not address_domain(mail_from):
        return Refusal(553, "5.1.7", "Sender address has no domain")
    if not may_claim(mail_from, domains, identities):
        return _not_allowed("Sender", mail_from, domains)
    return None


def parse_headers(raw):
    """The header section of raw as an email message whose payload is left
    empty. The parser ends the header section at the first empty line, so
    giving it only what comes before changes no field; walking the body line
    by line cost more than the header for any message over a few kilobytes."""
    head, blank_line, _ = raw.partition(b"\r\n\r\n")
    return BytesHeaderParser(policy=SMTP_POLICY).parsebytes(head + blank_line)


def _field_values(headers, name):
    """The values of every field called name, as received (unparsed)."""
    name = name.lower()
    return [value for key, value in headers.raw_items() if key.lower() == name]


def _first_value(headers, name):
    values = _field_values(headers, name)
    return values[0] if values else ""


def _parse_address_field(name, value):
    """An address field as the header registry reads it: its decoded text
    and the addresses in it."""
    shown = str(SMTP_POLICY.header_fetch_parse(name, value))
    return shown, tuple(addr for _, addr in getaddresses([shown]) if addr)


# The registry's parser is the costliest step of checking a message, and an
# application sends nearly all its mail with the same From. A reading depends
# on nothing but the field's name and value, so a remembered one is the same
# as a new one. Values longer than a line (RFC 5322 2.1.1) are parsed every
# time, which keeps the cache small.
_CACHED_VALUE_LENGTH = 998
_parse_short_address_field = lru_cache(maxsize=1024)(_parse_address_field)


def _address_field(name, value):
    if len(value) > _CACHED_VALUE_LENGTH:
        return _parse_address_field(name, value)
    return _parse_short_address_field(name, value)


def listed_from_and_subject(headers):
    """The first From and Subject as the header registry decodes them, '' for
    a missing one: what the message list shows and searches."""
    author = _first_value(headers, "From")
    subject = _first_value(headers, "Subject")
    if author:
        author, _ = _address_field("From", author)
    if subject:
        subject = str(SMTP_POLICY.header_fetch_parse("Subject", subject))
    return author, subject


def header_from_address(headers):
    """The single address of the From header, or a Refusal.

    RFC 5322 section 3.6 allows exactly one From field; DMARC (RFC 7489
    section 6.6.1) cannot evaluate a message with several, so neither can we.
    A From with several mailboxes is refused for the same reason, although
    RFC 5322 section 3.6.2 allows it together with a Sender field.
    """
    fields = _field_values(headers, "From")
    if not fields:
        return Refusal(550, "5.6.0", "Message has no From header (RFC 5322 3.6)")
    if len(fields) > 1:
        return Refusal(
            550, "5.6.0", "Message has more than one From header (RFC 5322 3.6)"
        )
    _, addresses = _address_field("From", fields[0])
    if len(addresses) != 1:
        return Refusal(550, "5.6.0", "From header must hold exactly one address")
    return addresses[0]


def _decoded_word(match):
    try:
        return str(make_header(decode_header(match.group(0))))
    except (HeaderParseError, LookupError, UnicodeDecodeError):
        return match.group(0)


def shown_text(raw_value):
    """A field value as a reader may show it: UTF-8 (RFC 6532) and encoded
    words decoded, quoting backslashes dropped, look-alikes folded. Comments
    are kept: the parsed header drops them, but readers display them."""
    text = raw_value.encode("ascii", "surrogateescape").decode("utf-8", "replace")
    text = _ENCODED_WORD.sub(_decoded_word, text).replace("\\", "")
    return unicodedata.normalize("NFKC", text).translate(_LOOKALIKE_DOTS)


def _ascii_domain(domain):
    # Replies are US-ASCII (RFC 5321 section 2.4); a Unicode label goes as its
    # A-label, the form a verified domain is stored in.
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain.encode("ascii", "backslashreplace").decode("ascii")


def check_display_name(headers, domains):
    """Refuse a From whose display name or comments show an address at a
    domain the tenant has not verified: the reader sees that address, while
    DMARC only checks the real one. The real address is already at a
    verified domain, so the whole field can be searched. Only addresses are
    caught; a display name that merely mentions a brand is a matter for the
    anti-spam stage."""
    values = [value for name, value in headers.raw_items() if name.lower() == "from"]
    for value in values:
        for match in _ADDRESS_IN_TEXT.finditer(shown_text(value)):
            shown = _ascii_domain(match.group(1).rstrip(".").lower())
            if shown not in domains:
                return Refusal(
                    550,
                    "5.7.1",
                    f"From display name shows an address at {shown}, which is "
                    "not a verified domain of this account",
                )
    return None


def check_header_sender(headers, domains, identities=()):
    """Refuse a message whose From, Sender or Reply-To names an address the
    sender may not claim."""
    author = header_from_address(headers)
    if isinstance(author, Refusal):
        return author
    claimed = [("From", author)]
    for field in ("Sender", "Reply-To"):
        for value in _field_values(headers, field):
            _, addresses = _address_field(field, value)
            claimed += [(field, address) for address in addresses]
    for field, address in claimed:
        if not may_claim(address, domains, identities):
            return _not_allowed(field, address, domains)
    return check_display_name(headers, domains)


def is_plausible_recipient(address):
    """A mailbox at a domain name that could have an MX: the gateway has
    already checked the syntax (RFC 5321 4.1.2). Address literals are refused,
    because delivery goes by MX records only."""
    local, at, domain = address.rpartition("@")
    domain = domain.rstrip(".")
    return bool(local and at and "." in domain and not domain.startswith("["))
