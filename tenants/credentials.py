"""Issuing and checking SMTP credentials."""

import secrets

from django.utils import timezone

from relay.secretbox import hash_secret, new_secret, secret_matches
from tenants.models import Credential


def issue_credential(tenant, name):
    """Create a credential; returns it with the secret, which is never stored."""
    secret = new_secret()
    credential = Credential.objects.create(
        tenant=tenant,
        name=name,
        username="pst_" + secrets.token_hex(8),
        secret_hash=hash_secret(secret),
    )
    return credential, secret


def authenticate(username, secret, peer_ip=None):
    """The enabled credential of an approved tenant that matches, or None.

    A wrong username, wrong secret, disabled credential and unapproved tenant
    all answer None, so that a client cannot tell them apart.
    """
    credential = (
        Credential.objects.select_related("tenant").filter(username=username).first()
    )
    if credential is None or not secret_matches(secret, credential.secret_hash):
        return None
    if not credential.enabled or not credential.tenant.may_send:
        return None
    Credential.objects.filter(pk=credential.pk).update(
        last_used_at=timezone.now(), last_used_from=peer_ip
    )
    return credential
