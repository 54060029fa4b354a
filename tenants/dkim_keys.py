"""Generating DKIM key pairs and loading them for signing."""

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from django.db import transaction
from django.utils import timezone

from relay.secretbox import seal, unseal
from tenants.models import DkimKey


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


def private_key_bytes(key):
    return unseal(key.private_key_sealed)


def record_strings(key):
    """The TXT value split into character-strings, each of at most 255
    octets (RFC 1035 section 3.3); a resolver joins them again."""
    value = key.record_value
    return [value[i : i + 255] for i in range(0, len(value), 255)]
