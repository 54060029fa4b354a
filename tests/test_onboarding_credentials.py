"""Credential checks at SMTP AUTH, and the credential pages."""

from datetime import timedelta

import pytest
from django.utils import timezone

from relay.secretbox import hash_secret
from tenants.credentials import authenticate, issue_credential, rotate_secret
from tenants.models import Credential, Domain, Tenant
from tests.support.people import make_people

pytestmark = pytest.mark.django_db


@pytest.fixture
def people():
    return make_people()


def test_secret_works_and_last_use_is_recorded(people):
    credential, secret = issue_credential(people.tenant, "CRM")
    assert authenticate(credential.username, secret, "192.0.2.7") == credential
    credential.refresh_from_db()
    assert credential.last_used_from == "192.0.2.7"
    assert credential.last_used_at is not None
    assert authenticate(credential.username, secret + "x", "192.0.2.7") is None
    assert authenticate("pst_nobody", secret, "192.0.2.7") is None


def test_secret_is_stored_only_as_a_hash(people):
    credential, secret = issue_credential(people.tenant, "CRM")
    stored = Credential.objects.filter(pk=credential.pk).values()[0]
    assert secret not in [str(v) for v in stored.values()]
    assert stored["secret_hash"] == hash_secret(secret)


@pytest.mark.parametrize("status", [Tenant.PENDING, Tenant.NEEDS_INFO,
                                    Tenant.REJECTED, Tenant.SUSPENDED])
def test_tenant_not_approved_cannot_log_in(people, status):
    credential, secret = issue_credential(people.tenant, "CRM")
    Tenant.objects.filter(pk=people.tenant.pk).update(status=status)
    assert authenticate(credential.username, secret, "127.0.0.1") is None


def test_disabled_or_expired_credential_is_refused(people):
    credential, secret = issue_credential(people.tenant, "CRM")
    Credential.objects.filter(pk=credential.pk).update(enabled=False)
    assert authenticate(credential.username, secret) is None
    Credential.objects.filter(pk=credential.pk).update(
        enabled=True, expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert authenticate(credential.username, secret) is None
    Credential.objects.filter(pk=credential.pk).update(
        expires_at=timezone.now() + timedelta(hours=1)
    )
    assert authenticate(credential.username, secret) is not None


def test_rotation_keeps_old_secret_only_during_overlap(people):
    credential, old = issue_credential(people.tenant, "CRM")
    new = rotate_secret(credential, timedelta(hours=2))
    assert authenticate(credential.username, new) is not None
    assert authenticate(credential.username, old) is not None

    Credential.objects.filter(pk=credential.pk).update(
        previous_secret_valid_until=timezone.now() - timedelta(seconds=1)
    )
    assert authenticate(credential.username, old) is None
    assert authenticate(credential.username, new) is not None

    newest = rotate_secret(Credential.objects.get(pk=credential.pk), timedelta(0))
    assert authenticate(credential.username, new) is None
    assert authenticate(credential.username, newest) is not None


@pytest.mark.parametrize("peer, allowed", [
    ("192.0.2.10", True), ("198.51.100.1", False), ("2001:db8::5", True),
    ("2001:db9::5", False), ("::ffff:192.0.2.10", True), (None, False),
])
def test_source_address_allowlist(people, peer, allowed):
    credential, secret = issue_credential(
        people.tenant, "CRM", allowed_networks="192.0.2.0/24\n2001:db8::/32"
    )
    assert (authenticate(credential.username, secret, peer) is not None) == allowed


def test_created_credential_shows_secret_once(people):
    Domain.objects.create(tenant=people.tenant, name="shop.example.test")
    client = people.client(people.admin)
    page = client.post("/credentials/new/", {
        "name": "Billing system",
        "allowed_identities": "*@shop.example.test\nbilling@shop.example.test",
        "allowed_networks": "192.0.2.1\n2001:db8::/48",
        "max_message_size": "1000000",
        "messages_per_hour": "500",
        "expires_at": "2030-01-01T12:00",
        "tags": "billing, eu",
        "owner_contact": "ops@shop.example.test",
    })
    assert page.status_code == 200
    credential = Credential.objects.get(tenant=people.tenant)
    secret = page.context["secret"]
    assert secret.encode() in page.content
    assert credential.username.encode() in page.content
    assert credential.allowed_networks == "192.0.2.1/32\n2001:db8::/48"
    assert credential.messages_per_hour == 500
    assert authenticate(credential.username, secret, "192.0.2.1") is not None
    assert authenticate(credential.username, secret, "192.0.2.2") is None

    detail = client.get(f"/credentials/{credential.pk}/")
    assert detail.status_code == 200
    assert secret.encode() not in detail.content


@pytest.mark.parametrize("field, value, error", [
    ("allowed_networks", "192.0.2.300", "is not an IP address or CIDR network"),
    ("allowed_identities", "*@bank.example.org", "is not one of your domains"),
    ("allowed_identities", "no-at-sign", "is not an address pattern"),
    ("max_message_size", "-5", "greater than or equal to 0"),
    ("name", "", "This field is required."),
])
def test_credential_form_names_the_bad_field(people, field, value, error):
    Domain.objects.create(tenant=people.tenant, name="shop.example.test")
    data = {"name": "CRM", field: value}
    page = people.client(people.owner).post("/credentials/new/", data)
    assert page.status_code == 200
    assert error in page.context["form"].errors[field][0]
    assert not Credential.objects.exists()


def test_rotate_disable_and_delete_through_the_pages(people):
    credential, old = issue_credential(people.tenant, "CRM")
    client = people.client(people.owner)

    page = client.post(f"/credentials/{credential.pk}/rotate/", {"overlap_hours": "1"})
    new = page.context["secret"]
    assert authenticate(credential.username, old) is not None
    assert authenticate(credential.username, new) is not None

    client.post(f"/credentials/{credential.pk}/enabled/", {"enabled": "0"})
    assert authenticate(credential.username, new) is None
    client.post(f"/credentials/{credential.pk}/enabled/", {"enabled": "1"})
    assert authenticate(credential.username, new) is not None

    client.post(f"/credentials/{credential.pk}/delete/")
    assert not Credential.objects.filter(pk=credential.pk).exists()


def test_viewer_cannot_change_credentials(people):
    credential, secret = issue_credential(people.tenant, "CRM")
    client = people.client(people.viewer)
    assert client.get(f"/credentials/{credential.pk}/").status_code == 200
    assert client.get("/credentials/new/").status_code == 403
    assert client.post(f"/credentials/{credential.pk}/rotate/",
                       {"overlap_hours": "1"}).status_code == 403
    assert client.post(f"/credentials/{credential.pk}/enabled/",
                       {"enabled": "0"}).status_code == 403
    assert client.post(f"/credentials/{credential.pk}/delete/").status_code == 403
    edit = client.post(f"/credentials/{credential.pk}/", {"name": "x"})
    assert edit.status_code == 403
    assert authenticate(credential.username, secret) is not None
    assert Credential.objects.get(pk=credential.pk).name == "CRM"
