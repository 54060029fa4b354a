"""Tenant-scoped lookups. Every view fetches objects through these, so that
another tenant's object is a 404, never a 403 that confirms it exists."""

from django.core.exceptions import PermissionDenied
from django.http import Http404

from relay.models import Message
from tenants.models import Credential, DkimKey, Domain, Invitation, Membership, Tenant


def tenants_of(user):
    if user.is_staff:
        return Tenant.objects.all()
    return Tenant.objects.filter(membership__user=user)


def membership_of(user):
    """The membership the portal acts in, or None.

    Limit: a user who belongs to several tenants acts in the one they joined
    first; there is no tenant switcher yet.
    """
    return (
        Membership.objects.select_related("tenant")
        .filter(user=user)
        .order_by("id")
        .first()
    )


def require_editor(membership):
    """Viewers see their tenant's pages but change nothing."""
    if membership is None or not membership.may_edit:
        raise PermissionDenied("Your role lets you view, not change, this account.")


def require_owner(membership):
    if membership is None or membership.role != Membership.OWNER:
        raise PermissionDenied("Only an owner may do this.")


def messages_visible_to(user):
    return Message.objects.filter(tenant__in=tenants_of(user))


def get_message_for_user_or_404(user, queue_id):
    message = messages_visible_to(user).filter(queue_id=queue_id).first()
    if message is None:
        raise Http404("No such message")
    return message


def _member_or_404(queryset, user, **lookup):
    """The object of the user's own tenant, or 404. Staff act in tenants only
    through the staff pages, so here they are scoped like anyone else."""
    membership = membership_of(user)
    if membership is None:
        raise Http404("No such object")
    found = queryset.filter(tenant=membership.tenant, **lookup).first()
    if found is None:
        raise Http404("No such object")
    return found


def get_domain_for_member_or_404(user, pk):
    return _member_or_404(Domain.objects.select_related("tenant"), user, pk=pk)


def get_dkim_key_for_member_or_404(user, domain_pk, key_pk):
    domain = get_domain_for_member_or_404(user, domain_pk)
    key = DkimKey.objects.filter(domain=domain, pk=key_pk).first()
    if key is None:
        raise Http404("No such key")
    return key


def get_credential_for_member_or_404(user, pk):
    return _member_or_404(Credential.objects.select_related("tenant"), user, pk=pk)


def get_teammate_for_member_or_404(user, pk):
    return _member_or_404(Membership.objects.select_related("user"), user, pk=pk)


def get_invitation_for_member_or_404(user, pk):
    return _member_or_404(
        Invitation.objects.filter(accepted_at__isnull=True), user, pk=pk
    )
