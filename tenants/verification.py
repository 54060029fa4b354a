"""Proving that a tenant controls a domain: a TXT record at _postern.<domain>.

The same check runs when a tenant presses "check now" and periodically for
every domain (tenants.tasks.reverify_domains). A domain whose record is gone
loses its verification, which stops sending for it at once:
policies.sender.verified_domain_names counts only verified_at not null.
"""

import logging

from django.db import IntegrityError, transaction
from django.utils import timezone

from tenants import audit
from tenants.domains import blocking_entry, needs_claim_consent, verified_elsewhere
from tenants.txt_lookup import FOUND, lookup_txt

log = logging.getLogger("postern.domains")


def explain_mismatch(domain, values):
    expected = domain.verification_token
    shown = ", ".join(repr(v) for v in values)
    text = (
        f"{domain.verification_record_name} has TXT {shown}, but none is exactly "
        f"{expected}."
    )
    if any(v and v.strip() != expected and v.strip() in expected for v in values):
        text += (
            " One of them holds only part of the value: publish the whole value."
        )
    return text


def read_verification_record(domain):
    """(found, explanation) from DNS alone; found is None when DNS did not
    answer, so nothing can be concluded."""
    answer = lookup_txt(domain.verification_record_name)
    if not answer.is_definitive:
        return None, answer.describe_failure() + " Try again in a minute."
    if answer.outcome != FOUND:
        return False, (
            answer.describe_failure()
            + f" Publish a TXT record there with the value {domain.verification_token}."
        )
    # Surrounding blanks are a common paste accident and carry no meaning.
    if domain.verification_token in [v.strip() for v in answer.values]:
        return True, f"Found {domain.verification_token} at {answer.name}."
    return False, explain_mismatch(domain, answer.values)


def refusal_before_lookup(domain):
    if blocking_entry(domain.name):
        return "This domain is blocked on this platform; contact support."
    if needs_claim_consent(domain):
        return (
            "Another account has verified this domain. Postern staff must "
            "consent before it can move to yours; contact support."
        )
    return None


def check_domain(domain):
    """Resolve the verification record, store what was found and return
    (verified, explanation)."""
    refusal = refusal_before_lookup(domain)
    if refusal:
        found, explanation = False, refusal
    else:
        found, explanation = read_verification_record(domain)

    now = timezone.now()
    domain.last_checked_at = now
    domain.last_check_result = explanation
    fields = ["last_checked_at", "last_check_result"]
    if found and domain.verified_at is None:
        if not take_verification(domain, now):
            explanation = "Another account verified this domain at the same time."
            domain.last_check_result = explanation
    elif found is False and domain.verified_at is not None:
        lose_verification(domain, now, explanation)
    domain.save(update_fields=fields)
    return domain.verified_at is not None, explanation


def take_verification(domain, now):
    """Mark domain verified; with staff consent, first take the name from the
    tenant that held it. Returns False when another tenant won a race."""
    try:
        with transaction.atomic():
            previous = verified_elsewhere(domain)
            if previous is not None:
                lose_verification(previous, now, "Verified by another account "
                                  "with staff consent; sending stopped.")
            domain.verified_at = now
            domain.verification_lost_at = None
            domain.save(update_fields=["verified_at", "verification_lost_at"])
    except IntegrityError:
        # The unique constraint on verified names closes the race between two
        # tenants checking the same name at once.
        domain.verified_at = None
        return False
    audit.record("domain_verified", domain.tenant, subject=domain.name)
    return True


def lose_verification(domain, now, explanation):
    domain.verified_at = None
    domain.verification_lost_at = now
    domain.last_check_result = explanation
    domain.save(update_fields=["verified_at", "verification_lost_at",
                               "last_check_result"])
    audit.record("domain_verification_lost", domain.tenant, subject=domain.name,
                 reason=explanation)
    log.warning("event=domain_verification_lost tenant=%s domain=%s",
                domain.tenant_id, domain.name)
