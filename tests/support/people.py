"""The people of the portal tests: an approved tenant with an owner, an admin
and a viewer; an outsider who owns another tenant; and a staff member."""

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.test import Client

from tenants.models import Membership, Tenant


@dataclass
class People:
    tenant: Tenant
    other_tenant: Tenant
    owner: object
    admin: object
    viewer: object
    outsider: object
    staff: object

    def client(self, user):
        client = Client()
        if user is not None:
            client.force_login(user)
        return client


def make_user(username, tenant=None, role=Membership.OWNER, password=None, **extra):
    """A user, logged in with Client.force_login unless given a password: the
    password hash is deliberately slow, and most tests do not need one."""
    user = get_user_model().objects.create_user(username, password=password, **extra)
    if tenant is not None:
        Membership.objects.create(user=user, tenant=tenant, role=role)
    return user


def make_people(status=Tenant.APPROVED):
    tenant = Tenant.objects.create(name="Shop Ltd", status=status)
    other = Tenant.objects.create(name="Other GmbH", status=Tenant.APPROVED)
    return People(
        tenant=tenant,
        other_tenant=other,
        owner=make_user("owner", tenant, Membership.OWNER),
        admin=make_user("admin", tenant, Membership.ADMIN),
        viewer=make_user("viewer", tenant, Membership.VIEWER),
        outsider=make_user("outsider", other, Membership.OWNER),
        staff=make_user("staff", is_staff=True),
    )
