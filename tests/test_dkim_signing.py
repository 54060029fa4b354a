"""DKIM signing: canonicalization against published vectors, and signatures
that an independent verifier (dkimpy) accepts."""

import base64
import hashlib
import re
from pathlib import Path

import dkim
import pytest
from hypothesis import given
from hypothesis import strategies as st
from cryptography.hazmat.primitives.asymmetric import ed25519

from relay import signing
from relay.dkim_canon import (
    relaxed_body,
    relaxed_header,
    signed_data,
    split_message,
    to_crlf,
)
from tenants.dkim_keys import generate_key
from tenants.models import Domain, Tenant

DATA = Path(__file__).parent / "data"


def dns_records():
    records = {}
    for line in (DATA / "dkim-dns-txt-records.tsv").read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split("\t", 1)
            records[name] = value
    return records


@pytest.mark.parametrize("vector", ["14", "22"])
def test_relaxed_canonicalization_matches_published_vectors(vector):
    raw = to_crlf((DATA / f"flanker-canon-email.{vector}").read_bytes())
    expected = (DATA / f"flanker-canon-relaxed.expected.{vector}").read_bytes()

    fields, body = split_message(raw)
    canonical = b"".join(relaxed_header(n, v) + b"\r\n" for n, v in fields)
    assert canonical + b"\r\n" + relaxed_body(body) == expected


def test_canonical_data_verifies_the_rfc8463_ed25519_signature():
    """Recompute what RFC 8463's example signature covers and check the
    published signature against the published key."""
    raw = to_crlf((DATA / "dkimverifier-rfc8463-A.3.eml").read_bytes())
    fields, body = split_message(raw)
    name, value = fields[0]
    assert name == b"DKIM-Signature" and b"ed25519" in value
    tags = dict(
        tag.strip().split(b"=", 1)
        for tag in value.replace(b"\r\n", b"").split(b";")
        if tag.strip()
    )
    names = [n.strip() for n in tags[b"h"].split(b":")]
    empty_b = value[: value.index(b"b=", value.index(b"bh=") + 3) + 2]
    covered = signed_data(fields[1:], names, empty_b)

    public = dns_records()["brisbane._domainkey.football.example.com"].split("p=")[1]
    key = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(public))

    key.verify(
        base64.b64decode(b"".join(tags[b"b"].split())), hashlib.sha256(covered).digest()
    )
    assert base64.b64encode(hashlib.sha256(relaxed_body(body)).digest()) == tags[b"bh"]


MESSAGE = (
    b"From: Billing <billing@pay.example.test>\r\n"
    b"To: alice@customer.example.net\r\n"
    b"Subject:   Invoice   1042\r\n"
    b"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
    b"Message-ID: <1042@pay.example.test>\r\n"
    b"\r\n"
    b"Total due: 99.00 EUR  \r\n"
    b"\r\n\r\n"
)


@pytest.fixture
def domain(db):
    tenant = Tenant.objects.create(name="Pay", status=Tenant.APPROVED)
    return Domain.objects.create(tenant=tenant, name="pay.example.test")


def verify_with_dkimpy(message, key):
    def dnsfunc(name, timeout=5):
        assert name == f"{key.record_name}.".encode()
        return key.record_value.encode()

    return dkim.verify(message, dnsfunc=dnsfunc)


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_signature_verifies_with_an_independent_verifier(domain, algorithm):
    key = generate_key(domain, algorithm=algorithm)
    signed = signing.sign(MESSAGE, key) + MESSAGE
    assert verify_with_dkimpy(signed, key)


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_changes_after_signing_break_the_signature(domain, algorithm):
    key = generate_key(domain, algorithm=algorithm)
    signed = signing.sign(MESSAGE, key) + MESSAGE

    assert not verify_with_dkimpy(signed.replace(b"99.00", b"19.00"), key)
    # A second From added on top is over-signed: the verifier sees it.
    assert not verify_with_dkimpy(b"From: evil@attacker.example\r\n" + signed, key)
    # Whitespace changes in transit are tolerated by relaxed canonicalization.
    assert verify_with_dkimpy(signed.replace(b"Invoice   1042", b"Invoice 1042"), key)


def test_signature_names_domain_and_selector(domain):
    key = generate_key(domain, selector="s2026")
    header = signing.sign(MESSAGE, key, timestamp=1796400000)
    unfolded = header.replace(b"\r\n ", b" ")
    assert b" d=pay.example.test;" in unfolded
    assert b" s=s2026;" in unfolded
    assert b" t=1796400000;" in unfolded
    assert (
        b"h=from:to:subject:date:message-id:from:to:subject:date:message-id" in unfolded
    )


@given(st.lists(st.sampled_from([b"a", b" ", b"\t", b"\r\n", b"x"]), max_size=40))
def test_relaxed_body_matches_the_rfc_read_line_by_line(parts):
    """RFC 6376 3.4.4, applied a line at a time as the RFC words it: the
    whole-body implementation must agree on every body."""
    body = b"".join(parts)
    lines = [
        re.sub(rb"[ \t]+", b" ", line).rstrip(b" ") for line in body.split(b"\r\n")
    ]
    while lines and lines[-1] == b"":
        lines.pop()
    assert relaxed_body(body) == b"".join(line + b"\r\n" for line in lines)
