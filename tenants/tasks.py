"""Periodic work on tenants' domains."""

import logging

from celery import shared_task

from tenants.models import Domain
from tenants.verification import check_domain

log = logging.getLogger("postern.domains")


@shared_task(name="tenants.tasks.reverify_domains")
def reverify_domains():
    """Check every verified domain again, and every domain that lost its
    verification, so that a record put back restores sending. Safe to run
    twice: each check only reflects what DNS says now.

    Limit: the domains are checked one after another in this one task, which
    suits hundreds of domains; with many thousands it should fan out into one
    task per domain.
    """
    checked = lost = 0
    domains = Domain.objects.filter(verified_at__isnull=False) | Domain.objects.filter(
        verification_lost_at__isnull=False
    )
    for domain in domains.select_related("tenant").iterator():
        was_verified = domain.is_verified
        verified, _ = check_domain(domain)
        checked += 1
        lost += was_verified and not verified
    log.info("event=domains_reverified checked=%d lost=%d", checked, lost)
    return checked, lost
