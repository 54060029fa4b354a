"""Tenant-scoped lookups. Every view fetches objects through these, so that
another tenant's object is a 404, never a 403 that confirms it exists."""

from django.http import Http404

from relay.models import Message
from tenants.models import Tenant


def tenants_of(user):
    if user.is_staff:
        return Tenant.objects.all()
    return Tenant.objects.filter(membership__user=user)


def messages_visible_to(user):
    return Message.objects.filter(tenant__in=tenants_of(user))


def get_message_for_user_or_404(user, queue_id):
    message = messages_visible_to(user).filter(queue_id=queue_id).first()
    if message is None:
        raise Http404("No such message")
    return message
