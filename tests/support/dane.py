"""DANE for delivery tests: TLSA record data computed from the test CA's
certificates, published in the test zone with or without the AD bit, and
MX servers that present a chosen chain.

The record data is computed here from the certificate files, not with
relay/dane.py, so that a mistake there cannot hide itself."""

import hashlib
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import serialization

# Selector 0: the whole certificate; 1: its SubjectPublicKeyInfo. Matching
# type 0: the bytes themselves; 1: SHA-256; 2: SHA-512 (RFC 6698 2.1).
_DIGESTS = {
    0: lambda data: data,
    1: lambda data: hashlib.sha256(data).digest(),
    2: lambda data: hashlib.sha512(data).digest(),
}


def load_certificate(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def tlsa_data(certificate, selector, matching_type):
    if selector == 0:
        selected = certificate.public_bytes(serialization.Encoding.DER)
    else:
        selected = certificate.public_key().public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    return _DIGESTS[matching_type](selected)


def tlsa_name(host, port):
    return f"_{port}._tcp.{host}"


def publish_tlsa(zone, host, port, usage, selector, matching_type, data):
    zone.add_tlsa(tlsa_name(host, port), usage, selector, matching_type, data)


def authenticate(zone, *names):
    """Answers for names get the AD bit, as from a validating resolver."""
    zone.authenticated.update(names)


def mx_context(ca, *names, send_ca=False):
    """(server context, leaf certificate) for an MX certificate from ca; with
    send_ca the server sends the CA certificate after its own, as RFC 7671
    section 5.2.2 asks of DANE-TA servers."""
    cert_file, key_file = ca.issue(*names)
    if send_ca:
        chain_file = cert_file.with_suffix(".chain.pem")
        chain_file.write_bytes(cert_file.read_bytes() + ca.cert_file.read_bytes())
        cert_file = chain_file
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context, load_certificate(cert_file)
