"""Domain ownership, DKIM publication and SPF/DMARC advice against the test DNS
server, including answers that are wrong, partial, split, missing or silent."""

from datetime import timedelta

import pytest

from policies.sender import verified_domain_names
from relay.signing import active_key
from tenants.dkim_keys import activate_key, check_key_published, generate_key
from tenants.domains import DomainRefused, add_domain
from tenants.guidance import dmarc_advice, spf_advice
from tenants.models import AuditEntry, Domain, Tenant
from tenants.tasks import reverify_domains
from tenants.verification import check_domain
from tests.support.people import make_people

pytestmark = pytest.mark.django_db


@pytest.fixture
def people():
    return make_people()


@pytest.fixture
def fast_dns(settings, dns_server):
    settings.DNS_TIMEOUT = 1
    return dns_server


@pytest.fixture
def domain(people):
    return Domain.objects.create(tenant=people.tenant, name="shop.example.test")


def publish_proof(zone, domain, value=None):
    zone.add_txt(domain.verification_record_name, value or domain.verification_token)


def test_exact_record_verifies(zone, fast_dns, domain):
    zone.add_txt(domain.verification_record_name, "some-other-service=abc")
    publish_proof(zone, domain)
    verified, explanation = check_domain(domain)
    assert verified
    assert explanation == (
        f"Found {domain.verification_token} at _postern.shop.example.test."
    )
    assert verified_domain_names(domain.tenant_id) == {"shop.example.test"}


def test_record_split_across_strings_verifies(zone, fast_dns, domain):
    token = domain.verification_token.encode()
    publish_proof(zone, domain, [token[:10], token[10:]])
    assert check_domain(domain)[0]


@pytest.mark.parametrize("published, expected", [
    ("postern-verify=wrong", "but none is exactly"),
    (None, "holds only part of the value"),
])
def test_wrong_or_partial_record_is_explained(zone, fast_dns, domain, published,
                                               expected):
    publish_proof(zone, domain, published or domain.verification_token[:20])
    verified, explanation = check_domain(domain)
    assert not verified
    assert expected in explanation
    assert domain.verification_token in explanation
    assert Domain.objects.get(pk=domain.pk).last_check_result == explanation


def test_missing_name_and_missing_record_differ(zone, fast_dns, domain):
    verified, explanation = check_domain(domain)
    assert not verified
    assert "_postern.shop.example.test does not exist in DNS (NXDOMAIN)" in explanation

    zone.add_a(domain.verification_record_name, "192.0.2.1")
    verified, explanation = check_domain(domain)
    assert "exists but has no TXT record" in explanation


def test_time_out_changes_nothing(zone, fast_dns, domain):
    publish_proof(zone, domain)
    assert check_domain(domain)[0]
    zone.silent.add(domain.verification_record_name)
    verified, explanation = check_domain(domain)
    assert verified
    assert "timed out" in explanation
    assert Domain.objects.get(pk=domain.pk).verified_at is not None


def test_check_now_page_shows_status_not_an_error_page(zone, fast_dns, people, domain):
    client = people.client(people.admin)
    zone.silent.add(domain.verification_record_name)
    page = client.post(f"/domains/{domain.pk}/check/", follow=True)
    assert page.status_code == 200
    assert b"timed out" in page.content

    zone.silent.clear()
    publish_proof(zone, domain, "postern-verify=nope")
    page = client.post(f"/domains/{domain.pk}/check/", follow=True)
    assert b"but none is exactly" in page.content
    assert b"Not verified" in page.content

    zone.remove(domain.verification_record_name)
    publish_proof(zone, domain)
    page = client.post(f"/domains/{domain.pk}/check/", follow=True)
    assert b'id="domain-status">Verified' in page.content


def test_periodic_recheck_flags_a_domain_whose_record_disappeared(zone, fast_dns,
                                                                   domain):
    publish_proof(zone, domain)
    assert check_domain(domain)[0]
    assert reverify_domains() == (1, 0)

    zone.remove(domain.verification_record_name)
    assert reverify_domains() == (1, 1)
    domain.refresh_from_db()
    assert domain.verified_at is None
    assert domain.verification_lost_at is not None
    assert verified_domain_names(domain.tenant_id) == frozenset()
    lost = AuditEntry.objects.get(action="domain_verification_lost")
    assert lost.subject == "shop.example.test" and lost.actor is None

    publish_proof(zone, domain)
    reverify_domains()
    domain.refresh_from_db()
    assert domain.verified_at is not None and domain.verification_lost_at is None


def test_reverification_is_registered_as_a_periodic_task():
    from relay.celery import app

    app.finalize()
    assert "tenants.tasks.reverify_domains" in app.tasks
    scheduled = [e["task"] for e in app.conf.beat_schedule.values()]
    assert "tenants.tasks.reverify_domains" in scheduled


def test_dkim_key_becomes_active_only_once_found_in_dns(zone, fast_dns, domain):
    publish_proof(zone, domain)
    check_domain(domain)
    key = generate_key(domain, "rsa", "sel1", activate=False)
    assert len(key.record_value) > 255

    ok, explanation = check_key_published(key)
    assert not ok and "does not exist" in explanation
    assert not key.active

    zone.add_txt(key.record_name, key.record_value[:200])
    ok, explanation = check_key_published(key)
    assert not ok and "cut short" in explanation

    zone.remove(key.record_name)
    zone.add_txt(key.record_name, key.record_value)  # split into 255-octet strings
    ok, explanation = check_key_published(key)
    assert ok, explanation
    key.refresh_from_db()
    assert key.active and key.published_at
    assert active_key("shop.example.test", domain.tenant_id) == key


def test_dkim_rotation_keeps_the_old_key_published_for_a_grace_period(
        zone, fast_dns, domain, settings):
    settings.DKIM_ROTATION_GRACE_DAYS = 3
    publish_proof(zone, domain)
    check_domain(domain)
    old = generate_key(domain, "rsa", "old", activate=False)
    zone.add_txt(old.record_name, old.record_value)
    assert check_key_published(old)[0]

    new = generate_key(domain, "ed25519", "new", activate=False)
    zone.add_txt(new.record_name, "v=DKIM1; k=ed25519; p=" + old.public_key_b64[:44])
    ok, explanation = check_key_published(new)
    assert not ok and "different key" in explanation
    with pytest.raises(Exception):
        activate_key(new)
    zone.remove(new.record_name)
    zone.add_txt(new.record_name, new.record_value)
    assert check_key_published(new)[0]
    new.refresh_from_db()
    assert not new.active  # the old key signs until someone switches over
    assert active_key(domain.name, domain.tenant_id) == old

    activate_key(new)
    old.refresh_from_db()
    assert active_key(domain.name, domain.tenant_id) == new
    assert not old.active
    assert old.keep_published_until - old.retired_at == timedelta(days=3)


def test_dkim_record_page_shows_strings_of_at_most_255(people, domain):
    key = generate_key(domain, "rsa", "pst1", activate=False)
    page = people.client(people.owner).get(f"/domains/{domain.pk}/")
    shown = page.context["keys"][0].strings
    assert "".join(shown) == key.record_value
    assert all(len(s) <= 255 for s in shown) and len(shown) == 2
    assert f'"{shown[0]}" "{shown[1]}"'.encode() in page.content


def test_new_key_form_refuses_bad_selector(people, domain):
    client = people.client(people.owner)
    page = client.post(f"/domains/{domain.pk}/keys/",
                       {"selector": "bad selector!", "algorithm": "rsa"}, follow=True)
    assert b"Use letters, digits and hyphens" in page.content
    assert not domain.dkim_keys.exists()
    client.post(f"/domains/{domain.pk}/keys/",
                {"selector": "s1", "algorithm": "ed25519"})
    assert domain.dkim_keys.get().algorithm == "ed25519"


@pytest.mark.parametrize("records, status, words", [
    ([], "problem", "v=spf1 include:_spf.postern.test -all"),
    (["v=spf1 include:_spf.postern.test -all"], "good", "authorises Postern"),
    (["v=spf1 ip4:192.0.2.0/24 -all"], "problem",
     "v=spf1 ip4:192.0.2.0/24 include:_spf.postern.test -all"),
    (["v=spf1 -all", "v=spf1 ~all"], "problem", "has 2 SPF records"),
    (["v=spf1 -include:_spf.postern.test ~all"], "problem", "does not authorise"),
])
def test_spf_advice(zone, fast_dns, settings, records, status, words):
    settings.SPF_INCLUDE = "_spf.postern.test"
    settings.SPF_ADDRESSES = []
    zone.add_a("shop.example.test", "192.0.2.1")
    for record in records:
        zone.add_txt("shop.example.test", record)
    advice = spf_advice("shop.example.test")
    assert advice.status == status
    assert words in advice.summary + " ".join(advice.steps)


def test_spf_advice_by_address(zone, fast_dns, settings):
    settings.SPF_INCLUDE = ""
    settings.SPF_ADDRESSES = ["198.51.100.7"]
    zone.add_txt("shop.example.test", "v=spf1 ip4:198.51.100.0/24 ~all")
    assert spf_advice("shop.example.test").status == "good"


@pytest.mark.parametrize("record, status, words", [
    (None, "problem", "has no DMARC record"),
    ("v=DMARC1; p=none; rua=mailto:d@shop.example.test", "warning", "Policy is none"),
    ("v=DMARC1; p=quarantine", "warning", "Policy is quarantine"),
    ("v=DMARC1;p=reject", "good", "Policy is reject"),
    ("v=DMARC1; rua=mailto:d@shop.example.test", "problem", "no valid p= tag"),
])
def test_dmarc_advice(zone, fast_dns, record, status, words):
    if record:
        zone.add_txt("_dmarc.shop.example.test", record)
    advice = dmarc_advice("shop.example.test")
    assert (advice.status, words in advice.summary) == (status, True)


def test_guidance_page_survives_a_silent_dns_server(zone, fast_dns, people, domain,
                                                    settings):
    settings.SPF_INCLUDE = "_spf.postern.test"
    zone.silent.update({"shop.example.test", "_dmarc.shop.example.test"})
    page = people.client(people.viewer).get(f"/domains/{domain.pk}/guidance/")
    assert page.status_code == 200
    assert page.content.count(b"timed out") == 2


def test_domain_verified_elsewhere_needs_staff_consent(zone, fast_dns, people, domain):
    publish_proof(zone, domain)
    assert check_domain(domain)[0]

    claim = add_domain(people.other_tenant, "Shop.Example.Test.")
    publish_proof(zone, claim)
    verified, explanation = check_domain(claim)
    assert not verified and "staff must consent" in explanation
    staff_page = people.client(people.staff).get("/staff/domains/")
    assert claim in staff_page.context["claims"]

    people.client(people.staff).post(f"/staff/domains/{claim.pk}/consent/",
                                     {"reason": "Registrar records show Other GmbH"})
    assert check_domain(Domain.objects.get(pk=claim.pk))[0]
    domain.refresh_from_db()
    assert domain.verified_at is None and domain.verification_lost_at is not None
    assert verified_domain_names(people.tenant.pk) == frozenset()
    assert verified_domain_names(people.other_tenant.pk) == {"shop.example.test"}


def test_blocked_domain_stops_sending_and_cannot_be_added(zone, fast_dns, people,
                                                          domain):
    publish_proof(zone, domain)
    assert check_domain(domain)[0]
    page = people.client(people.staff).post(
        "/staff/domains/", {"name": "example.test", "reason": "Abuse reports"})
    assert page.status_code == 302
    domain.refresh_from_db()
    assert domain.verified_at is None
    assert not check_domain(domain)[0]

    with pytest.raises(DomainRefused, match="blocked"):
        add_domain(people.other_tenant, "news.example.test")
    page = people.client(people.owner).post("/domains/", {"name": "x.example.test"})
    assert b"is blocked on this platform" in page.content


@pytest.mark.parametrize("name, error", [
    ("not a domain", "Enter a domain name"),
    ("localhost", "Enter a domain name"),
    ("-bad.example.com", "Enter a domain name"),
    ("127.0.0.1", "not an IP address"),
    ("shop.example.test", "already in your list"),
])
def test_add_domain_form_errors(people, domain, name, error):
    page = people.client(people.admin).post("/domains/", {"name": name})
    assert page.status_code == 200
    assert error in page.context["form"].errors["name"][0]


def test_pending_tenant_adds_domains_and_sees_records(people):
    Tenant.objects.filter(pk=people.tenant.pk).update(status=Tenant.PENDING)
    client = people.client(people.owner)
    page = client.post("/domains/", {"name": "new.example.test"}, follow=True)
    domain = Domain.objects.get(name="new.example.test")
    assert page.status_code == 200
    assert domain.verification_token.encode() in page.content
    assert b"_postern.new.example.test" in page.content
