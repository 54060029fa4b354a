"""The suppression list: addresses and whole domains a tenant's mail is no
longer sent to, because they bounced hard, complained, or were added."""

import logging

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from relay.models import Suppression

log = logging.getLogger("postern.suppression")


def normalise_entry(raw):
    """An address or a domain, lower-cased; ValueError says what is wrong."""
    entry = (raw or "").strip().lower()
    if entry.startswith("@"):
        entry = entry[1:]
    if not entry:
        raise ValueError("Enter an address or a domain.")
    if len(entry) > 320:
        raise ValueError("Too long for an address or a domain.")
    if "@" in entry:
        try:
            validate_email(entry)
        except ValidationError:
            raise ValueError(f"{entry} is not a valid address.")
        return entry
    labels = entry.split(".")
    if len(labels) < 2 or not all(_is_label(label) for label in labels):
        raise ValueError(f"{entry} is not a valid domain.")
    return entry


def _is_label(label):
    # RFC 1035 section 2.3.1, with digits allowed first (RFC 1123).
    return (
        0 < len(label) <= 63
        and label.replace("-", "").isalnum()
        and label.isascii()
        and not label.startswith("-")
        and not label.endswith("-")
    )


def suppression_for(tenant_id, address):
    """The entry that suppresses address for the tenant, or None. A domain
    entry covers addresses at exactly that domain, not its subdomains."""
    return suppressions_for(tenant_id, [address]).get(address)


def suppressions_for(tenant_id, addresses):
    """{address: the entry that suppresses it} for those of addresses the
    tenant has suppressed, in one query. A tenant has one entry per address
    or domain; where both match, the newer wins."""
    keys = {}
    for address in addresses:
        lowered = address.lower()
        keys[address] = (lowered, lowered.rpartition("@")[2])
    wanted = {key for pair in keys.values() for key in pair}
    entries = {
        entry.entry: entry
        for entry in Suppression.objects.filter(tenant_id=tenant_id, entry__in=wanted)
    }
    result = {}
    for address, pair in keys.items():
        matches = [entries[key] for key in pair if key in entries]
        if matches:
            result[address] = max(matches, key=lambda entry: entry.created_at)
    return result


def suppress(tenant_id, raw_entry, reason, detail=""):
    """Add an entry; returns (suppression, created). An existing entry keeps
    its first reason and date."""
    entry = normalise_entry(raw_entry)
    suppression, created = Suppression.objects.get_or_create(
        tenant_id=tenant_id,
        entry=entry,
        defaults={"reason": reason, "detail": detail[:500]},
    )
    if created:
        log.info("event=suppressed tenant=%s reason=%s", tenant_id, reason)
    return suppression, created


def is_hard_bounce(status):
    """Whether an enhanced status code (RFC 3463) says the address itself is
    bad: X.1.x addressing problems and X.2.1 disabled mailboxes. A full
    mailbox (X.2.2) or a refusal of the content is not the address's fault
    and does not suppress it."""
    parts = (status or "").split(".")
    if len(parts) != 3 or parts[0] != "5":
        return False
    return parts[1] == "1" or parts[1:] == ["2", "1"]


def import_entries(tenant_id, lines, reason=Suppression.IMPORTED, detail=""):
    """Add many entries at once. Returns (added, already there, problems),
    problems being (line number, text, what is wrong); a bad line does not
    stop the others."""
    added = existing = 0
    problems = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            _, created = suppress(tenant_id, text, reason, detail)
        except ValueError as exc:
            problems.append((number, text[:100], str(exc)))
            continue
        if created:
            added += 1
        else:
            existing += 1
    return added, existing, problems
