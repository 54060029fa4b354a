"""The development sink's pages: staff read what it kept, byte for byte;
nobody else learns the pages exist."""

import pytest
from django.test import Client

from tests.support.people import make_user

pytestmark = pytest.mark.django_db

MAIL = (
    b"DKIM-Signature: v=1; a=rsa-sha256; d=shop.example.test; s=s1; b=abc\r\n"
    b"From: app@shop.example.test\r\nSubject: Kept <b>here</b>\r\n\r\nHello\r\n"
)


@pytest.fixture
def sink(settings, tmp_path):
    settings.DEV_SINK_ENABLED = True
    settings.DEV_SINK_DIR = tmp_path
    name = "1796400000.123456-0123abcd"
    (tmp_path / f"{name}.eml").write_bytes(MAIL)
    (tmp_path / f"{name}.json").write_text(
        '{"mail_from": "", "rcpt_tos": ["a@b.example"]}'
    )
    return name


def client_for(user):
    client = Client()
    client.force_login(user)
    return client


def test_staff_read_a_kept_mail_with_its_signature(sink):
    staff = client_for(make_user("staff", is_staff=True))
    listing = staff.get("/dev/sink/").content.decode()
    assert f"/dev/sink/{sink}/" in listing

    page = staff.get(f"/dev/sink/{sink}/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "DKIM-Signature: v=1; a=rsa-sha256; d=shop.example.test" in text
    assert "&lt;b&gt;here&lt;/b&gt;" in text  # shown, never rendered


@pytest.mark.parametrize("name", ["../../etc/passwd", "nope", "1-00000000"])
def test_unknown_or_crafted_names_are_404(sink, name):
    staff = client_for(make_user("staff", is_staff=True))
    assert staff.get(f"/dev/sink/{name}/").status_code == 404


def test_tenant_users_get_404(sink):
    user = client_for(make_user("owner"))
    assert user.get("/dev/sink/").status_code == 404
    assert user.get(f"/dev/sink/{sink}/").status_code == 404
