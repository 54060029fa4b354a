"""A credential's own limits can tighten the platform's, never loosen them."""

import pytest
from django.conf import settings

from tenants.models import Credential
from tests.support.raw_smtp import authenticated
from tests.support.senders import make_sender

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_credential_cannot_raise_the_platform_recipient_limit(gateway, zone):
    sender = make_sender(zone)
    Credential.objects.filter(username=sender.username).update(max_recipients=5000)
    platform_limit = settings.GATEWAY_MAX_RECIPIENTS
    client = authenticated(gateway, sender)
    try:
        client.command(f"MAIL FROM:<{sender.address}>")
        for n in range(platform_limit):
            assert client.command(f"RCPT TO:<r{n}@customer.example.net>").startswith(
                "250"
            )
        assert client.command("RCPT TO:<one-more@customer.example.net>") == (
            f"452 4.5.3 Too many recipients (limit {platform_limit} per message)"
        )
    finally:
        client.close()
