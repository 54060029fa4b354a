"""Applying as a business, staff decisions on applications, and invitations
into a tenant."""

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from tenants import audit
from tenants.models import Invitation, Membership, Tenant


@transaction.atomic
def sign_up(business, username, email, password):
    """A pending tenant from business (a dict of Tenant fields) and its owner."""
    tenant = Tenant.objects.create(status=Tenant.PENDING, **business)
    owner = get_user_model().objects.create_user(username, email, password)
    Membership.objects.create(user=owner, tenant=tenant, role=Membership.OWNER)
    audit.record("applied", tenant, owner, subject=tenant.name)
    return tenant, owner


# decision -> (statuses it applies to, the status it leads to, reason required)
DECISIONS = {
    "approve": ((Tenant.PENDING, Tenant.NEEDS_INFO), Tenant.APPROVED, False),
    "reject": ((Tenant.PENDING, Tenant.NEEDS_INFO), Tenant.REJECTED, True),
    "request_info": ((Tenant.PENDING,), Tenant.NEEDS_INFO, True),
    "suspend": ((Tenant.APPROVED,), Tenant.SUSPENDED, True),
    "reinstate": ((Tenant.SUSPENDED,), Tenant.APPROVED, False),
}


DECISION_LABELS = {
    "approve": "Approve",
    "reject": "Reject",
    "request_info": "Ask for more information",
    "suspend": "Suspend",
    "reinstate": "Reinstate",
}


class DecisionRefused(Exception):
    pass


def decisions_for(tenant):
    """(decision, label) for each decision that applies to tenant now."""
    return [
        (name, DECISION_LABELS[name])
        for name, (before, _, _) in DECISIONS.items()
        if tenant.status in before
    ]


@transaction.atomic
def decide(tenant_id, decision, actor, reason=""):
    """Apply a staff decision. The row lock makes two staff members deciding
    at once take turns, so the second sees the first's outcome."""
    tenant = Tenant.objects.select_for_update().get(pk=tenant_id)
    if decision not in DECISIONS:
        raise DecisionRefused("Unknown decision.")
    before, after, reason_required = DECISIONS[decision]
    if tenant.status not in before:
        raise DecisionRefused(
            f"A tenant that is {tenant.get_status_display().lower()} cannot be "
            f"given that decision."
        )
    if reason_required and not reason.strip():
        raise DecisionRefused("Give a reason; the applicant will see it.")
    # Suspension takes effect at once: the gateway's authenticate() and the
    # worker's recheck both read tenant.status.
    tenant.status = after
    tenant.status_reason = reason.strip()
    tenant.save(update_fields=["status", "status_reason"])
    audit.record(decision, tenant, actor, subject=tenant.name, reason=reason.strip())
    return tenant


@transaction.atomic
def resubmit_application(tenant, business, actor):
    """The applicant answers a request for more information."""
    for field, value in business.items():
        setattr(tenant, field, value)
    if tenant.status == Tenant.NEEDS_INFO:
        tenant.status = Tenant.PENDING
    tenant.save()
    audit.record("application_updated", tenant, actor, subject=tenant.name)


def hash_token(token):
    # Invitation tokens are random 32-byte values; a plain hash is enough.
    return hashlib.sha256(token.encode()).hexdigest()


def invite(tenant, email, role, actor):
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        tenant=tenant,
        email=email,
        role=role,
        token_hash=hash_token(token),
        invited_by=actor,
        expires_at=timezone.now() + timedelta(days=settings.INVITATION_VALID_DAYS),
    )
    audit.record("user_invited", tenant, actor, subject=f"{email} as {role}")
    return invitation, token


def open_invitation(token):
    """The invitation a link's token stands for, if it can still be used."""
    return Invitation.objects.filter(
        token_hash=hash_token(token),
        accepted_at__isnull=True,
        expires_at__gt=timezone.now(),
    ).select_related("tenant").first()


@transaction.atomic
def accept_invitation(invitation, user):
    claimed = Invitation.objects.filter(
        pk=invitation.pk, accepted_at__isnull=True
    ).update(accepted_at=timezone.now())
    if not claimed:
        # Someone used the link a moment ago; an invitation admits one person.
        return None
    membership, _ = Membership.objects.get_or_create(
        user=user, tenant=invitation.tenant, defaults={"role": invitation.role}
    )
    audit.record("invitation_accepted", invitation.tenant, user,
                 subject=f"{user.username} as {invitation.role}")
    return membership
