"""The audit log: every decision with who, when and why."""

import logging

from tenants.models import AuditEntry

log = logging.getLogger("postern.audit")


def record(action, tenant=None, actor=None, subject="", reason=""):
    entry = AuditEntry.objects.create(
        tenant=tenant, actor=actor, action=action, subject=subject, reason=reason
    )
    log.info(
        "event=%s tenant=%s actor=%s subject=%s",
        action,
        tenant.pk if tenant else "-",
        actor.pk if actor else "postern",
        subject or "-",
    )
    return entry
