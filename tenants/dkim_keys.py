"""Generating DKIM key pairs and loading them for signing."""

import base64
import re
from datetime import timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from relay.secretbox import seal
from tenants import audit
from tenants.models import DkimKey
from tenants.txt_lookup import FOUND, lookup_txt

# A selector is one or more DNS labels (RFC 6376 section 3.1).
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
SELECTOR = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")


def generate_key(domain, algorithm=DkimKey.RSA, selector=None, activate=True):
    selector = selector or timezone.now().strftime("pst%Y%m")
    if algorithm == DkimKey.RSA:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private_bytes = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        public_der = private.public_key().public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    elif algorithm == DkimKey.ED25519:
        private = ed25519.Ed25519PrivateKey.generate()
        # dkimpy takes the 32-byte seed, base64-encoded.
        private_bytes = base64.b64encode(
            private.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
        )
        public_der = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    else:
        raise ValueError(f"unknown DKIM algorithm {algorithm!r}")

    with transaction.atomic():
        if activate:
            DkimKey.objects.filter(domain=domain, active=True).update(active=False)
        return DkimKey.objects.create(
            domain=domain,
            selector=selector,
            algorithm=algorithm,
            private_key_sealed=seal(private_bytes),
            public_key_b64=base64.b64encode(public_der).decode(),
            active=activate,
        )


def record_strings(key):
    """The TXT value split into character-strings, each of at most 255
    octets (RFC 1035 section 3.3); a resolver joins them again."""
    value = key.record_value
    return [value[i : i + 255] for i in range(0, len(value), 255)]


def suggest_selector(domain):
    base = timezone.now().strftime("pst%Y%m")
    taken = set(domain.dkim_keys.values_list("selector", flat=True))
    selector, n = base, 1
    while selector in taken:
        n += 1
        selector = f"{base}-{n}"
    return selector


def record_tags(value):
    """The tag=value pairs of a DKIM key record (RFC 6376 section 3.6.1)."""
    tags = {}
    for part in value.split(";"):
        name, sep, tag_value = part.partition("=")
        if sep:
            tags[name.strip()] = "".join(tag_value.split())
    return tags


def explain_published_key(key, values):
    """(matches, explanation) for the TXT values found at the key's name."""
    expected = key.public_key_b64
    keys_found = [record_tags(v).get("p", "") for v in values]
    if expected in keys_found:
        return True, f"Found this key at {key.record_name}."
    for found in keys_found:
        if found and expected.startswith(found):
            return False, (
                f"The key at {key.record_name} is cut short: {len(found)} of "
                f"{len(expected)} characters. Paste the whole value; if your DNS "
                "host asks, split it into several strings of at most 255 characters."
            )
    if any(keys_found):
        return False, f"{key.record_name} holds a different key than this one."
    return False, (
        f"{key.record_name} has TXT {', '.join(repr(v) for v in values)}, "
        "with no p= key in it."
    )


def check_key_published(key):
    """Look the key up in DNS; a key found there is marked published and, if
    its domain has no active key yet, made active. Returns (ok, explanation)."""
    answer = lookup_txt(key.record_name)
    if answer.outcome == FOUND:
        ok, explanation = explain_published_key(key, answer.values)
    else:
        ok, explanation = False, answer.describe_failure()

    key.last_check_result = explanation
    if ok:
        key.published_at = timezone.now()
    key.save(update_fields=["last_check_result", "published_at"])
    if ok and not key.domain.dkim_keys.filter(active=True).exists():
        activate_key(key)
    return ok, explanation


class KeyNotPublished(Exception):
    pass


@transaction.atomic
def activate_key(key, actor=None):
    """Make key the one that signs; the key it replaces stays published for
    the rotation grace period, since mail signed with it is still in transit
    and in mailboxes whose verifiers look the key up later."""
    if key.published_at is None:
        raise KeyNotPublished("Check that the key is published before using it.")
    now = timezone.now()
    grace = timedelta(days=settings.DKIM_ROTATION_GRACE_DAYS)
    DkimKey.objects.filter(domain=key.domain, active=True).exclude(pk=key.pk).update(
        active=False, retired_at=now, keep_published_until=now + grace
    )
    key.active = True
    key.retired_at = key.keep_published_until = None
    key.save(update_fields=["active", "retired_at", "keep_published_until"])
    audit.record("dkim_key_activated", key.domain.tenant, actor,
                 subject=key.record_name)
