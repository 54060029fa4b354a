"""The suppression list and held mail in the portal and the API: what each
role may see and do, and that other tenants' entries stay out of reach."""

import pytest
from rest_framework.test import APIClient

from relay import suppression
from relay.models import Recipient, Suppression
from tests.support.outbound import queue_message
from tests.support.people import make_people, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def people():
    return make_people()


def api(user):
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def test_page_lists_the_tenants_entries_with_reason_and_date(people):
    suppression.suppress(
        people.tenant.pk, "gone@example.net", Suppression.HARD_BOUNCE, "AB12: 550 5.1.1"
    )
    suppression.suppress(
        people.other_tenant.pk, "secret@example.org", Suppression.MANUAL
    )

    page = people.client(people.viewer).get("/suppressions/")

    assert page.status_code == 200
    text = page.content.decode()
    assert "gone@example.net" in text and "Hard bounce" in text and " UTC" in text
    assert "secret@example.org" not in text
    assert "Remove" not in text  # a viewer changes nothing


def test_owner_adds_imports_and_removes(people):
    client = people.client(people.owner)

    assert (
        client.post("/suppressions/add/", {"entry": "Alice@Example.net"}).status_code
        == 302
    )
    assert (
        client.post("/suppressions/add/", {"entry": "@blocked.example"}).status_code
        == 302
    )
    refused = client.post("/suppressions/add/", {"entry": "not an address@"})
    assert refused.status_code == 400
    assert "is not a valid address" in refused.content.decode()

    imported = client.post(
        "/suppressions/import/",
        {
            "entries": "one@example.net\n# a comment\nalice@example.net\n"
            "bad@\nexample.org\n",
        },
        follow=True,
    )
    text = imported.content.decode()
    assert "Imported 2 new, 1 already listed." in text
    assert "Line 4 (bad@): bad@ is not a valid address." in text

    entries = dict(
        Suppression.objects.filter(tenant=people.tenant).values_list("entry", "reason")
    )
    assert entries == {
        "alice@example.net": "manual",
        "blocked.example": "manual",
        "one@example.net": "imported",
        "example.org": "imported",
    }

    entry = Suppression.objects.get(entry="alice@example.net")
    assert client.post(f"/suppressions/{entry.pk}/remove/").status_code == 302
    assert not Suppression.objects.filter(pk=entry.pk).exists()


def test_viewer_and_outsider_cannot_change_the_list(people):
    entry, _ = suppression.suppress(
        people.tenant.pk, "gone@example.net", Suppression.MANUAL
    )

    viewer = people.client(people.viewer)
    assert (
        viewer.post("/suppressions/add/", {"entry": "x@example.net"}).status_code == 403
    )
    assert viewer.post(f"/suppressions/{entry.pk}/remove/").status_code == 403

    outsider = people.client(people.outsider)
    assert outsider.post(f"/suppressions/{entry.pk}/remove/").status_code == 404
    assert Suppression.objects.filter(pk=entry.pk).exists()
    assert people.client(None).get("/suppressions/").status_code == 302


def test_api_lists_adds_imports_and_removes(people):
    client = api(people.admin)
    suppression.suppress(
        people.other_tenant.pk, "secret@example.org", Suppression.MANUAL
    )

    created = client.post(
        "/api/suppressions/",
        {"entry": "Gone@Example.net", "detail": "asked by phone"},
        format="json",
    )
    assert created.status_code == 201
    assert created.json()["entry"] == "gone@example.net"
    assert created.json()["kind"] == "address"
    assert created.json()["reason"] == "manual"
    again = client.post(
        "/api/suppressions/", {"entry": "gone@example.net"}, format="json"
    )
    assert again.status_code == 200

    bad = client.post("/api/suppressions/", {"entry": "nope"}, format="json")
    assert bad.status_code == 400
    assert bad.json() == {"entry": ["nope is not a valid domain."]}

    imported = client.post(
        "/api/suppressions/import/",
        {"entries": ["example.org", "gone@example.net", "x@"]},
        format="json",
    )
    assert imported.json() == {
        "added": 1,
        "already_listed": 1,
        "errors": [{"index": 2, "entry": "x@", "error": "x@ is not a valid address."}],
    }

    listed = client.get("/api/suppressions/").json()
    assert {(e["entry"], e["kind"]) for e in listed} == {
        ("gone@example.net", "address"),
        ("example.org", "domain"),
    }
    assert client.get("/api/suppressions/?q=org").json()[0]["entry"] == "example.org"

    pk = listed[0]["id"]
    assert client.delete(f"/api/suppressions/{pk}/").status_code == 204
    assert client.delete(f"/api/suppressions/{pk}/").status_code == 404


def test_api_keeps_tenants_and_roles_apart(people):
    entry, _ = suppression.suppress(
        people.tenant.pk, "gone@example.net", Suppression.MANUAL
    )

    outsider = api(people.outsider)
    assert outsider.get("/api/suppressions/").json() == []
    assert outsider.delete(f"/api/suppressions/{entry.pk}/").status_code == 404

    viewer = api(people.viewer)
    assert viewer.get("/api/suppressions/").status_code == 200
    refused = viewer.post(
        "/api/suppressions/", {"entry": "x@example.net"}, format="json"
    )
    assert refused.status_code == 403
    assert refused.json() == {
        "detail": "Your role lets you view, not change, this account."
    }
    assert viewer.delete(f"/api/suppressions/{entry.pk}/").status_code == 403

    assert api(None).get("/api/suppressions/").status_code == 403
    assert Suppression.objects.filter(pk=entry.pk).exists()


def held_message(tenant):
    message = queue_message(
        tenant,
        ["dev@example.net"],
        subject="Staging invoice",
        body="Total due: 12.00 EUR",
    )
    message.recipients.update(state=Recipient.HELD)
    return message


def test_held_mail_is_shown_to_its_tenant_only(people):
    message = held_message(people.tenant)

    listing = people.client(people.viewer).get("/held/")
    assert message.queue_id in listing.content.decode()
    page = people.client(people.viewer).get(f"/held/{message.queue_id}/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Subject: Staging invoice" in text and "Total due: 12.00 EUR" in text
    assert "dev@example.net" in text

    outsider = people.client(people.outsider)
    assert outsider.get(f"/held/{message.queue_id}/").status_code == 404
    assert message.queue_id not in outsider.get("/held/").content.decode()


@pytest.mark.django_db(transaction=True)
def test_suppression_page_in_a_browser(live_server, new_page):
    from tenants.models import Membership, Tenant

    tenant = Tenant.objects.create(name="Shop Ltd", status=Tenant.APPROVED)
    make_user("keeper", tenant, Membership.OWNER, password="a-long-unusual-passphrase")
    page = new_page()
    page.goto(live_server.url + "/login/")
    page.get_by_label("Username").fill("keeper")
    page.get_by_label("Password").fill("a-long-unusual-passphrase")
    page.get_by_role("button", name="Log in").click()

    page.goto(live_server.url + "/suppressions/")
    page.get_by_label("Address or domain").fill("gone@example.net")
    page.locator("#add-suppression").get_by_role("button", name="Add").click()
    assert (
        page.locator(".notice").first.inner_text()
        == "gone@example.net is now suppressed."
    )
    page.get_by_label("Addresses or domains").fill("example.org\nbad@")
    page.get_by_role("button", name="Import").click()
    notices = page.locator(".notice").all_inner_texts()
    assert notices[0] == "Imported 1 new, 0 already listed."
    assert "Line 2 (bad@)" in notices[1]
    rows = page.locator("tbody tr").all_inner_texts()
    assert any("example.org" in row and "whole domain" in row for row in rows)

    page.locator("tbody tr", has_text="gone@example.net").get_by_role(
        "button", name="Remove"
    ).click()
    assert page.locator(".notice").first.inner_text() == (
        "gone@example.net may be sent to again."
    )
    assert list(Suppression.objects.values_list("entry", flat=True)) == ["example.org"]
