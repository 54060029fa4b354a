"""Issuing, rotating and checking SMTP credentials.

authenticate() runs on every SMTP AUTH, so it stays cheap: one indexed query,
a keyed SHA-256 (relay/secretbox.py explains why no slow password hash is
needed) and a few comparisons.
"""

import ipaddress
import secrets
from datetime import timedelta

from django.utils import timezone

from relay.secretbox import hash_secret, new_secret, secret_matches
from tenants.models import Credential


def issue_credential(tenant, name, **options):
    """Create a credential; returns it with the secret, which is never stored."""
    secret = new_secret()
    credential = Credential.objects.create(
        tenant=tenant,
        name=name,
        username="pst_" + secrets.token_hex(8),
        secret_hash=hash_secret(secret),
        **options,
    )
    return credential, secret


def rotate_secret(credential, overlap):
    """Give credential a new secret; the old one keeps working for overlap (a
    timedelta), so the application can be switched over without a gap."""
    secret = new_secret()
    credential.previous_secret_hash = credential.secret_hash
    credential.previous_secret_valid_until = timezone.now() + overlap
    if overlap <= timedelta(0):
        credential.previous_secret_hash = ""
        credential.previous_secret_valid_until = None
    credential.secret_hash = hash_secret(secret)
    credential.save(
        update_fields=["secret_hash", "previous_secret_hash",
                       "previous_secret_valid_until"]
    )
    return secret


def parse_networks(text):
    """The networks of an allowlist, one address or CIDR per line; raises
    ValueError naming the first bad line."""
    networks = []
    for line in text.splitlines():
        line = line.strip()
        if line:
            try:
                networks.append(ipaddress.ip_network(line, strict=False))
            except ValueError:
                raise ValueError(f"{line!r} is not an IP address or CIDR network")
    return networks


def peer_allowed(allowed_networks, peer_ip):
    if not allowed_networks.strip():
        return True
    if not peer_ip:
        return False
    try:
        address = ipaddress.ip_address(peer_ip)
    except ValueError:
        return False
    if getattr(address, "ipv4_mapped", None):
        address = address.ipv4_mapped
    # Lines were validated when saved; a bad one matches nothing.
    for line in allowed_networks.splitlines():
        try:
            if address in ipaddress.ip_network(line.strip(), strict=False):
                return True
        except ValueError:
            continue
    return False


def secret_is_current(credential, secret, now):
    if secret_matches(secret, credential.secret_hash):
        return True
    return bool(
        credential.previous_secret_hash
        and credential.previous_secret_valid_until
        and now < credential.previous_secret_valid_until
        and secret_matches(secret, credential.previous_secret_hash)
    )


def authenticate(username, secret, peer_ip=None):
    """The usable credential that matches, or None.

    A wrong username or secret, a disabled or expired credential, a source
    address outside its allowlist and an unapproved tenant all answer None,
    so that a client cannot tell them apart.
    """
    credential = (
        Credential.objects.select_related("tenant").filter(username=username).first()
    )
    now = timezone.now()
    if credential is None or not secret_is_current(credential, secret, now):
        return None
    if not credential.enabled or not credential.tenant.may_send:
        return None
    if credential.expires_at is not None and credential.expires_at <= now:
        return None
    if not peer_allowed(credential.allowed_networks, peer_ip):
        return None
    Credential.objects.filter(pk=credential.pk).update(
        last_used_at=now, last_used_from=peer_ip
    )
    return credential
