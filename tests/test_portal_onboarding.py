"""Sign-up, vetting decisions, invitations and roles through the pages."""

import pytest
from django.test import Client

from tenants.credentials import authenticate, issue_credential
from tenants.models import AuditEntry, Membership, Tenant
from tests.support.people import make_people, make_user

pytestmark = pytest.mark.django_db

APPLICATION = {
    "name": "Acme Invoicing Ltd",
    "website": "https://acme.example.test",
    "country": "gb",
    "registration_number": "12345678",
    "contact_name": "Ada Lovelace",
    "contact_email": "ada@acme.example.test",
    "contact_phone": "+44 20 7946 0000",
    "applications": "CRM\nHR system",
    "expected_monthly_volume": "20000",
    "username": "ada",
    "password": "a-long-unusual-passphrase",
    "password_again": "a-long-unusual-passphrase",
}


@pytest.fixture
def people():
    return make_people()


def test_sign_up_creates_a_pending_tenant_and_its_owner():
    client = Client()
    page = client.post("/signup/", APPLICATION, follow=True)
    assert page.status_code == 200
    tenant = Tenant.objects.get(name="Acme Invoicing Ltd")
    assert tenant.status == Tenant.PENDING
    assert (tenant.country, tenant.expected_monthly_volume) == ("GB", 20000)
    owner = Membership.objects.get(tenant=tenant)
    assert (owner.user.username, owner.role) == ("ada", Membership.OWNER)
    assert owner.user.check_password("a-long-unusual-passphrase")
    assert b"Pending vetting" in page.content
    assert AuditEntry.objects.get(tenant=tenant).action == "applied"


@pytest.mark.parametrize("field, value, error", [
    ("name", "", "This field is required."),
    ("country", "Germany", "two-letter"),
    ("website", "not a url", "Enter a valid URL."),
    ("expected_monthly_volume", "lots", "Enter a whole number."),
    ("password_again", "something-else-entirely", "The two passwords differ."),
    ("password", "password", "too common"),
])
def test_sign_up_errors_name_the_field(field, value, error):
    data = dict(APPLICATION, **{field: value})
    if field == "password":
        data["password_again"] = value
    page = Client().post("/signup/", data)
    assert page.status_code == 200
    assert error in " ".join(page.context["form"].errors[field])
    assert not Tenant.objects.exists()


def test_taken_username_is_refused(people):
    page = Client().post("/signup/", dict(APPLICATION, username="Owner"))
    assert "This username is taken." in page.context["form"].errors["username"]


def decide(people, tenant, decision, reason=""):
    return people.client(people.staff).post(
        f"/staff/tenants/{tenant.pk}/", {"decision": decision, "reason": reason},
        follow=True,
    )


def test_staff_decisions_are_audited_and_suspension_stops_logins(people):
    tenant = Tenant.objects.create(name="Applicant", status=Tenant.PENDING)
    credential, secret = issue_credential(tenant, "CRM")
    assert authenticate(credential.username, secret) is None

    page = decide(people, tenant, "request_info")
    assert "Give a reason" in " ".join(page.context["form"].errors["reason"])
    decide(people, tenant, "request_info", "Send your VAT number")
    tenant.refresh_from_db()
    assert (tenant.status, tenant.status_reason) == (Tenant.NEEDS_INFO,
                                                     "Send your VAT number")
    decide(people, tenant, "approve")
    assert authenticate(credential.username, secret) is not None

    decide(people, tenant, "suspend", "Phishing reports")
    assert authenticate(credential.username, secret) is None
    page = decide(people, tenant, "approve")
    assert "cannot be given that decision" in " ".join(
        page.context["form"].errors["decision"])
    decide(people, tenant, "reinstate", "Cleared up")
    assert authenticate(credential.username, secret) is not None

    log = list(AuditEntry.objects.filter(tenant=tenant).order_by("id")
               .values_list("action", "actor__username", "reason"))
    assert log == [
        ("request_info", "staff", "Send your VAT number"),
        ("approve", "staff", ""),
        ("suspend", "staff", "Phishing reports"),
        ("reinstate", "staff", "Cleared up"),
    ]
    page = people.client(people.staff).get(f"/staff/tenants/{tenant.pk}/")
    assert b"Phishing reports" in page.content


def test_rejection_needs_a_reason_and_is_shown_to_the_applicant(people):
    Tenant.objects.filter(pk=people.tenant.pk).update(status=Tenant.PENDING)
    decide(people, people.tenant, "reject", "Could not confirm the business")
    page = people.client(people.owner).get("/account/")
    assert b"rejected: Could not confirm the business" in page.content


def test_answering_a_request_for_information_returns_to_the_queue(people):
    Tenant.objects.filter(pk=people.tenant.pk).update(status=Tenant.NEEDS_INFO,
                                                      status_reason="VAT number?")
    client = people.client(people.owner)
    assert b"VAT number?" in client.get("/account/").content
    data = {k: v for k, v in APPLICATION.items() if not k.startswith(("user", "pass"))}
    data["registration_number"] = "GB123456789"
    client.post("/account/", data)
    tenant = Tenant.objects.get(pk=people.tenant.pk)
    assert (tenant.status, tenant.registration_number) == (Tenant.PENDING,
                                                           "GB123456789")


def test_vetting_queue_lists_waiting_applications_first(people):
    Tenant.objects.create(name="Waiting Co", status=Tenant.PENDING)
    page = people.client(people.staff).get("/staff/tenants/")
    names = [t.name for t in page.context["tenants"]]
    assert names[0] == "Waiting Co"
    assert set(names) == {"Waiting Co", "Shop Ltd", "Other GmbH"}


@pytest.mark.parametrize("url", ["/staff/tenants/", "/staff/domains/",
                                 "/staff/tenants/1/"])
def test_tenant_users_never_see_staff_pages(people, url):
    for user in (people.owner, people.viewer):
        assert people.client(user).get(url).status_code == 404
        assert people.client(user).post(url, {"decision": "approve"}).status_code == 404
    assert Client().get(url).status_code == 302  # to the login page


def test_invitation_link_admits_one_person_with_the_given_role(people):
    page = people.client(people.admin).post(
        "/team/", {"email": "vera@shop.example.test", "role": "viewer"})
    link = page.context["link"]
    assert link.startswith("http://testserver/invitations/")
    path = link.removeprefix("http://testserver")

    newcomer = Client()
    assert b"Join Shop Ltd" in newcomer.get(path).content
    newcomer.post(path, {"username": "vera", "password": "a-long-unusual-passphrase"})
    membership = Membership.objects.get(user__username="vera")
    assert (membership.tenant, membership.role) == (people.tenant, Membership.VIEWER)
    assert newcomer.get("/domains/").status_code == 200

    assert Client().get(path).status_code == 404
    assert Client().get("/invitations/made-up-token/").status_code == 404


def test_only_an_owner_invites_owners_and_changes_roles(people):
    page = people.client(people.admin).post(
        "/team/", {"email": "x@shop.example.test", "role": "owner"})
    assert "Only an owner" in page.context["form"].errors["role"][0]

    viewer = Membership.objects.get(user=people.viewer)
    admin_client = people.client(people.admin)
    assert admin_client.post(f"/team/{viewer.pk}/role/",
                             {"role": "admin"}).status_code == 403
    people.client(people.owner).post(f"/team/{viewer.pk}/role/", {"role": "admin"})
    assert Membership.objects.get(pk=viewer.pk).role == Membership.ADMIN

    owner = Membership.objects.get(user=people.owner)
    page = people.client(people.owner).post(f"/team/{owner.pk}/role/",
                                            {"role": "viewer"}, follow=True)
    assert b"at least one owner" in page.content
    assert Membership.objects.get(pk=owner.pk).role == Membership.OWNER


def test_viewer_changes_nothing(people):
    client = people.client(people.viewer)
    assert client.get("/domains/").status_code == 200
    assert client.post("/domains/", {"name": "v.example.test"}).status_code == 403
    invitation = {"email": "a@b.test", "role": "viewer"}
    assert client.post("/team/", invitation).status_code == 403
    owner = Membership.objects.get(user=people.owner)
    assert client.post(f"/team/{owner.pk}/remove/").status_code == 403
    assert not people.tenant.domains.exists()
    assert not people.tenant.invitations.exists()


def test_user_without_a_tenant_is_told_how_to_get_one(people):
    loner = make_user("loner")
    page = people.client(loner).get("/domains/")
    assert page.status_code == 404
    assert b"Ask an owner" in page.content
