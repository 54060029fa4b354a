"""Every object URL of the tenant pages, opened by someone of another tenant:
always 404, never 403, and the object is left as it was."""

import pytest

from tenants.credentials import issue_credential
from tenants.dkim_keys import generate_key
from tenants.models import Credential, DkimKey, Domain, Invitation, Membership
from tenants.onboarding import invite
from tests.support.people import make_people

pytestmark = pytest.mark.django_db


@pytest.fixture
def objects(db):
    people = make_people()
    domain = Domain.objects.create(tenant=people.tenant, name="shop.example.test")
    key = generate_key(domain, "ed25519", "sel1", activate=False)
    credential, _ = issue_credential(people.tenant, "CRM")
    invitation, _ = invite(people.tenant, "new@shop.example.test", "viewer",
                           people.owner)
    viewer = Membership.objects.get(user=people.viewer)
    return people, domain, key, credential, invitation, viewer


def object_urls(domain, key, credential, invitation, member):
    d, k, c = domain.pk, key.pk, credential.pk
    return [
        ("get", f"/domains/{d}/", {}),
        ("get", f"/domains/{d}/guidance/", {}),
        ("post", f"/domains/{d}/check/", {}),
        ("post", f"/domains/{d}/delete/", {}),
        ("post", f"/domains/{d}/keys/", {"selector": "x1", "algorithm": "rsa"}),
        ("post", f"/domains/{d}/keys/{k}/check/", {}),
        ("post", f"/domains/{d}/keys/{k}/activate/", {}),
        ("post", f"/domains/{d}/keys/{k}/delete/", {}),
        ("get", f"/credentials/{c}/", {}),
        ("post", f"/credentials/{c}/", {"name": "Taken over"}),
        ("post", f"/credentials/{c}/rotate/", {"overlap_hours": "0"}),
        ("post", f"/credentials/{c}/enabled/", {"enabled": "0"}),
        ("post", f"/credentials/{c}/delete/", {}),
        ("post", f"/team/{member.pk}/role/", {"role": "owner"}),
        ("post", f"/team/{member.pk}/remove/", {}),
        ("post", f"/team/invitations/{invitation.pk}/revoke/", {}),
    ]


def snapshot(domain, key, credential, invitation, member):
    return (
        list(Domain.objects.filter(pk=domain.pk).values()),
        list(DkimKey.objects.filter(pk=key.pk).values()),
        list(Credential.objects.filter(pk=credential.pk).values()),
        list(Invitation.objects.filter(pk=invitation.pk).values()),
        list(Membership.objects.filter(pk=member.pk).values()),
        DkimKey.objects.count(),
    )


def test_every_object_url_is_404_for_another_tenant(objects):
    people, *things = objects
    before = snapshot(*things)
    outsider = people.client(people.outsider)
    for method, url, data in object_urls(*things):
        response = getattr(outsider, method)(url, data)
        assert response.status_code == 404, (method, url, response.status_code)
    assert snapshot(*things) == before


def test_staff_outside_the_tenant_are_sent_to_the_staff_pages(objects):
    """Staff see tenants through the staff pages and change nothing of theirs
    through the tenant pages."""
    people, *things = objects
    before = snapshot(*things)
    staff = people.client(people.staff)
    for method, url, data in object_urls(*things):
        response = getattr(staff, method)(url, data)
        assert (response.status_code, response.url) == (302, "/staff/tenants/"), url
    assert snapshot(*things) == before


def test_the_same_urls_work_for_the_owner(objects):
    people, *things = objects
    owner = people.client(people.owner)
    for method, url, data in object_urls(*things)[:2] + object_urls(*things)[8:9]:
        assert getattr(owner, method)(url, data).status_code == 200, url


def test_lists_show_only_the_users_tenant(objects):
    people, domain, key, credential, invitation, member = objects
    outsider = people.client(people.outsider)
    for url, secret_text in [
        ("/domains/", domain.name),
        ("/credentials/", credential.username),
        ("/team/", invitation.email),
        ("/account/", "Shop Ltd"),
    ]:
        page = outsider.get(url)
        assert page.status_code == 200
        assert secret_text.encode() not in page.content, url
    team = outsider.get("/team/").context["members"]
    assert [m.user.username for m in team] == ["outsider"]
