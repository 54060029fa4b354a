"""The whole onboarding path in a real browser: sign-up, staff approval,
domain and DKIM records published in the test DNS server, a credential, and a
message sent with it through the real gateway and worker to the test MX."""

import email
import re

import dkim
import pytest

from tenants.models import Credential, Tenant
from tests.support.clients import swaks
from tests.support.people import make_user
from tests.support.senders import make_recipient_domain
from tests.test_end_to_end import dns_txt_from

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DOMAIN = "onboard.example.test"


def sign_up(page, base):
    page.goto(base + "/signup/")
    page.get_by_label("Legal name of the business").fill("Onboard Retail SA")
    page.get_by_label("Website").fill("https://onboard.example.test")
    page.get_by_label("Country (two-letter code, e.g. DE)").fill("FR")
    page.get_by_label("Company registration number").fill("RCS 123 456 789")
    page.get_by_label("Contact name").fill("Claire Martin")
    page.get_by_label("Contact email").fill("claire@onboard.example.test")
    page.get_by_label("Applications that will send mail").fill("Shop\nCRM")
    page.get_by_label("Expected messages per month").fill("5000")
    page.get_by_label("Your username").fill("claire")
    page.get_by_label("Password:", exact=True).fill("a-long-unusual-passphrase")
    page.get_by_label("Password again").fill("a-long-unusual-passphrase")
    page.get_by_role("button", name="Send application").click()
    assert page.locator("#tenant-status").inner_text() == "Pending vetting"


def verify_domain(page, base, zone):
    page.goto(base + "/domains/")
    page.get_by_label("Domain").fill(DOMAIN)
    page.get_by_role("button", name="Add domain").click()
    name = page.locator("#verification-name").inner_text()
    value = page.locator("#verification-value").inner_text()
    assert name == f"_postern.{DOMAIN}"
    zone.add_txt(name, value)
    page.get_by_role("button", name="Check now").click()
    assert page.locator("#domain-status").inner_text() == "Verified"


def publish_dkim_key(page, zone):
    page.get_by_role("button", name="Create key").click()
    key = page.locator(".dkim-key").first
    assert key.locator(".key-state").inner_text() == "Waiting for DNS"
    name = key.locator(".key-name").inner_text()
    strings = re.findall(r'"([^"]*)"', key.locator(".key-value").inner_text())
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)
    zone.add_txt(name, strings)
    key.get_by_role("button", name="Check DNS").click()
    key = page.locator(".dkim-key").first
    assert key.locator(".key-state").inner_text() == "Active: signs your mail"
    return name.split("._domainkey.")[0]


def staff_decides(page, base, decision, reason=""):
    page.goto(base + "/staff/tenants/")
    page.get_by_role("link", name="Onboard Retail SA").click()
    page.get_by_label("Decision").select_option(label=decision)
    page.get_by_label("Reason").fill(reason)
    page.get_by_role("button", name="Record decision").click()
    return page.locator("#tenant-status").inner_text()


def log_in(page, base, username, password):
    page.goto(base + "/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def create_credential(page, base):
    page.goto(base + "/credentials/")
    page.get_by_role("link", name="New credential").click()
    page.get_by_label("Application name").fill("Shop")
    page.get_by_label("Sender identities it may use").fill(f"*@{DOMAIN}")
    page.get_by_role("button", name="Create credential").click()
    return (page.locator("#credential-username").inner_text(),
            page.locator("#credential-secret").inner_text())


def test_sign_up_to_first_delivered_message(live_server, new_page, stack, zone, mx,
                                             dns_server):
    base = live_server.url
    applicant = new_page()
    sign_up(applicant, base)
    verify_domain(applicant, base, zone)
    selector = publish_dkim_key(applicant, zone)

    make_user("vetter", password="vetter-passphrase-1", is_staff=True)
    staff = new_page()
    log_in(staff, base, "vetter", "vetter-passphrase-1")
    assert staff_decides(staff, base, "Approve") == "Approved"
    assert Tenant.objects.get(name="Onboard Retail SA").status == Tenant.APPROVED

    username, secret = create_credential(applicant, base)
    rcpt_domain = make_recipient_domain(zone)
    sent = swaks(stack, sender=f"orders@{DOMAIN}", to=f"alice@{rcpt_domain}",
                 auth=(username, secret), headers=["Subject: Order 77 shipped"])
    assert sent.returncode == 0, sent.output

    mail = mx.wait_for(1)[0]
    assert mail.mail_from == f"orders@{DOMAIN}"
    assert email.message_from_bytes(mail.data)["Subject"] == "Order 77 shipped"
    assert dkim.verify(mail.data, dnsfunc=dns_txt_from(dns_server))
    tags = dkim.util.parse_tag_value(
        email.message_from_bytes(mail.data)["DKIM-Signature"].encode())
    assert (tags[b"d"].decode(), tags[b"s"].decode()) == (DOMAIN, selector)
    assert Credential.objects.get(username=username).last_used_from == "127.0.0.1"

    assert staff_decides(staff, base, "Suspend", "Complaints") == "Suspended"
    refused = swaks(stack, sender=f"orders@{DOMAIN}", to=f"alice@{rcpt_domain}",
                    auth=(username, secret))
    assert "535 5.7.8" in refused.output
    applicant.goto(base + "/account/")
    assert "suspended, so nothing can be sent: Complaints" in applicant.content()
