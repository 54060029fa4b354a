"""DKIM signing with the active key of the From domain (RFC 6376)."""

import dkim

from tenants.dkim_keys import private_key_bytes
from tenants.models import DkimKey

# Signed once more than they occur, so that a header added in transit (a
# second From, a new Subject) breaks the signature (RFC 6376 section 8.15).
OVERSIGNED = (
    b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to",
    b"sender", b"mime-version", b"content-type", b"content-transfer-encoding",
)
ALGORITHM_NAMES = {DkimKey.RSA: b"rsa-sha256", DkimKey.ED25519: b"ed25519-sha256"}


class NoSigningKey(Exception):
    pass


def active_key(domain_name, tenant_id):
    key = (
        DkimKey.objects.select_related("domain")
        .filter(
            domain__name=domain_name,
            domain__tenant_id=tenant_id,
            domain__verified_at__isnull=False,
            active=True,
        )
        .first()
    )
    if key is None:
        raise NoSigningKey(f"no active DKIM key for {domain_name}")
    return key


def sign(raw, key):
    """The DKIM-Signature header for raw, as bytes ending in CRLF."""
    signer = dkim.DKIM(raw)
    signer.add_frozen(OVERSIGNED)
    return signer.sign(
        key.selector.encode(),
        key.domain.name.encode(),
        private_key_bytes(key),
        canonicalize=(b"relaxed", b"relaxed"),
        signature_algorithm=ALGORITHM_NAMES[key.algorithm],
        include_headers=signer.default_sign_headers(),
    )
