"""Proving that a tenant controls a domain: a TXT record at _postern.<domain>."""

import dns.exception
from django.utils import timezone

from relay.dns import txt_strings


def check_domain(domain):
    """Resolve the verification record, store what was found, return
    (verified, explanation)."""
    name = domain.verification_record_name
    try:
        found = txt_strings(name)
    except dns.exception.Timeout:
        verified, explanation = False, f"DNS lookup of {name} timed out; try again."
    except dns.exception.DNSException as exc:
        verified, explanation = False, f"DNS lookup of {name} failed: {type(exc).__name__}."
    else:
        verified = domain.verification_token in found
        if verified:
            explanation = f"Found {domain.verification_token} at {name}."
        elif found:
            explanation = f"TXT at {name} holds {found!r}, not the expected token."
        else:
            explanation = f"No TXT record at {name}."

    now = timezone.now()
    domain.last_checked_at = now
    domain.last_check_result = explanation
    if verified and domain.verified_at is None:
        domain.verified_at = now
    domain.save(update_fields=["last_checked_at", "last_check_result", "verified_at"])
    return verified, explanation
