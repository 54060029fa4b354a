"""Adding domains, platform-wide blocks and taking a name over from another
tenant with staff consent."""

import re

from django.db import transaction
from django.utils import timezone

from tenants import audit
from tenants.models import BlockedDomain, Domain

# RFC 1035 section 2.3.4: labels of at most 63 octets, names of at most 253
# characters in text form (255 octets on the wire).
LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class DomainRefused(Exception):
    """A domain name a tenant may not add; str() says why, for the form."""


def normalize_domain_name(text):
    name = text.strip().rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise DomainRefused("This is not a valid domain name.")
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(LABEL.match(x) for x in labels):
        raise DomainRefused("Enter a domain name such as mail.example.com.")
    if labels[-1].isdigit():
        # An address such as 127.0.0.1 passes the label syntax, but no
        # top-level domain is all digits (RFC 3696 section 2).
        raise DomainRefused("Enter a domain name, not an IP address.")
    return name


def blocking_entry(name):
    """The block that covers name (the name itself or a parent), or None."""
    labels = name.split(".")
    candidates = [".".join(labels[i:]) for i in range(len(labels))]
    return BlockedDomain.objects.filter(name__in=candidates).first()


def verified_elsewhere(domain):
    """The other tenant's verified domain of the same name, or None."""
    return (
        Domain.objects.filter(name=domain.name, verified_at__isnull=False)
        .exclude(pk=domain.pk)
        .select_related("tenant")
        .first()
    )


def add_domain(tenant, text, actor=None):
    name = normalize_domain_name(text)
    if blocking_entry(name):
        raise DomainRefused(f"{name} is blocked on this platform; contact support.")
    if Domain.objects.filter(tenant=tenant, name=name).exists():
        raise DomainRefused(f"{name} is already in your list.")
    domain = Domain.objects.create(tenant=tenant, name=name)
    audit.record("domain_added", tenant, actor, subject=name)
    return domain


def needs_claim_consent(domain):
    return domain.claim_approved_at is None and verified_elsewhere(domain) is not None


def consent_to_claim(domain, actor, reason):
    domain.claim_approved_at = timezone.now()
    domain.save(update_fields=["claim_approved_at"])
    audit.record("domain_claim_approved", domain.tenant, actor, domain.name, reason)


@transaction.atomic
def block_domain(name, actor, reason):
    """Block name and its subdomains; every tenant's domain under it stops
    sending at once."""
    block, _ = BlockedDomain.objects.get_or_create(
        name=name, defaults={"reason": reason, "blocked_by": actor}
    )
    covered = Domain.objects.filter(name=name) | Domain.objects.filter(
        name__endswith="." + name
    )
    for domain in covered.filter(verified_at__isnull=False):
        domain.verified_at = None
        domain.verification_lost_at = timezone.now()
        domain.last_check_result = "Blocked by Postern staff; sending stopped."
        domain.save(
            update_fields=["verified_at", "verification_lost_at", "last_check_result"]
        )
        audit.record("domain_blocked", domain.tenant, actor, domain.name, reason)
    audit.record("domain_blocked", None, actor, name, reason)
    return block


def unblock_domain(block, actor, reason=""):
    audit.record("domain_unblocked", None, actor, block.name, reason)
    block.delete()
