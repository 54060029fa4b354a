"""DANE for outbound SMTP (RFC 7672): TLSA records at _PORT._tcp.MXHOST, when
DNSSEC-authenticated, say which certificate the MX host must present.

What Postern trusts: it does not validate DNSSEC itself. It asks the
resolver in POSTERN_DNS_RESOLVER to validate (DO bit, RFC 3225; AD bit in
the query, RFC 6840 section 5.7) and takes an answer as authenticated only
when the reply has the AD bit set. That is only as good as the path to that
resolver: anyone on the path can set AD. So DANE is on by default only when
the resolver is on loopback (see `enabled`); POSTERN_DANE=on trusts another
resolver on the operator's word. A resolver that does not validate never
sets AD, and then nothing here applies.

Known limits, each to go when a receiver needs it:
- CNAMEs of MX hosts are not followed for the TLSA base name (RFC 7672
  section 2.2.2); the TLSA lookup is always at the MX host's own name.
- The implicit MX (a domain without MX records) gets no DANE.
- Whether the MX host's address records are secure is not checked (RFC 7672
  section 2.2.2 asks for it before the TLSA lookup); an authenticated TLSA
  RRset shows its zone is signed, and a forged address still has to present
  a certificate that matches it.
- DANE-TA works only when the server sends the trust anchor in its chain
  (RFC 7671 section 5.2.2 asks servers to); a TLSA record that holds the
  whole anchor but is not in the chain does not match.
"""

import hashlib
import ipaddress
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.resolver
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification
from django.conf import settings

from relay.dns import resolver
from relay.env import parse_hostport

# Certificate usages (RFC 6698 section 2.1.1); PKIX-TA(0) and PKIX-EE(1) are
# unusable for SMTP (RFC 7672 section 3.1.3).
DANE_TA, DANE_EE = 2, 3
# Selectors (RFC 6698 section 2.1.2).
FULL_CERTIFICATE, PUBLIC_KEY = 0, 1
# Matching types (RFC 6698 section 2.1.3): exact, SHA-256, SHA-512.
DIGESTS = {
    0: lambda data: data,
    1: lambda data: hashlib.sha256(data).digest(),
    2: lambda data: hashlib.sha512(data).digest(),
}


@dataclass(frozen=True)
class TLSARecord:
    usage: int
    selector: int
    matching_type: int
    data: bytes

    @property
    def usable(self):
        return (
            self.usage in (DANE_TA, DANE_EE)
            and self.selector in (FULL_CERTIFICATE, PUBLIC_KEY)
            and self.matching_type in DIGESTS
        )

    def matches(self, certificate):
        """certificate: a cryptography x509.Certificate."""
        if self.selector == FULL_CERTIFICATE:
            selected = certificate.public_bytes(serialization.Encoding.DER)
        else:
            selected = certificate.public_key().public_bytes(
                serialization.Encoding.DER,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
        return DIGESTS[self.matching_type](selected) == self.data


class LookupFailed(Exception):
    """The TLSA lookup for an MX host whose MX record is authenticated did not
    give an answer either way. RFC 7672 section 2.1.1: such a host must not be
    used, since the failure may be an attacker's doing."""


def enabled():
    """POSTERN_DANE: "on", "off", or "auto": on when POSTERN_DNS_RESOLVER is
    a loopback address, the one path Postern can take to be trusted. The
    system resolver is not assumed to be on one."""
    mode = settings.DANE
    if mode != "auto":
        return mode == "on"
    if not settings.DNS_RESOLVER:
        return False
    host, _ = parse_hostport("POSTERN_DNS_RESOLVER", settings.DNS_RESOLVER, 53)
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _validating_resolver():
    r = resolver()
    r.use_edns(0, dns.flags.DO, 1232)
    r.flags = dns.flags.RD | dns.flags.AD
    return r


def _authenticated(answer):
    return bool(answer.response.flags & dns.flags.AD)


def authenticated_mx_hosts(domain):
    """The MX host names of domain when its MX RRset is authenticated, else an
    empty set. RFC 7672 section 2.2.1: DANE applies only to MX hosts from a
    secure MX lookup, since an attacker could otherwise name his own host."""
    try:
        answer = _validating_resolver().resolve(domain, "MX")
    except dns.exception.DNSException:
        return frozenset()
    if not _authenticated(answer):
        return frozenset()
    return frozenset(str(rd.exchange).rstrip(".").lower() for rd in answer)


def tlsa_records(host, port):
    """The authenticated TLSA records for host's SMTP service on port, or ()
    when there are none or they are not authenticated. Raises LookupFailed."""
    name = f"_{port}._tcp.{host}"
    try:
        answer = _validating_resolver().resolve(name, "TLSA")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        # Whether the denial is authenticated or not, there is nothing to
        # match: the host is used as without DANE (RFC 7672 section 2.2.2).
        return ()
    except dns.exception.DNSException as exc:
        raise LookupFailed(f"TLSA lookup for {name} failed: {type(exc).__name__}")
    if not _authenticated(answer):
        return ()
    return tuple(
        TLSARecord(rd.usage, rd.selector, rd.mtype, bytes(rd.cert)) for rd in answer
    )


def chain_matches(records, chain_der, host):
    """Whether the server's chain (DER certificates, leaf first) satisfies one
    of the usable records (RFC 7672 section 3.1)."""
    chain = [x509.load_der_x509_certificate(der) for der in chain_der]
    if not chain:
        return False
    for record in records:
        if record.usage == DANE_EE and record.matches(chain[0]):
            # Section 3.1.1: the key is the server's own; neither names nor
            # validity dates are checked.
            return True
        if record.usage == DANE_TA and _trust_anchor_matches(record, chain, host):
            return True
    return False


def _leaf_policy():
    # The web PKI profile wants an Authority Key Identifier in the leaf; the
    # private CAs that DANE-TA serves often leave it out, and it adds nothing
    # when the anchor is pinned by DNS.
    return verification.ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.AuthorityKeyIdentifier, verification.Criticality.AGNOSTIC, None
    )


def _trust_anchor_matches(record, chain, host):
    """Section 3.1.2: a certificate of the chain other than the leaf matches
    the record, the chain leads from the leaf to it, and the leaf is valid
    for the MX host's name. cryptography's verifier checks the chain with
    the matching certificate as the only trust anchor, in the web PKI
    profile (validity dates included). Left out: a leaf without DNS names in
    subjectAltName (section 3.2.3 allows the common name then), and names
    other than the MX host (section 3.2.2 allows more by configuration)."""
    leaf, rest = chain[0], chain[1:]
    for anchor in (cert for cert in rest if record.matches(cert)):
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store([anchor]))
            .extension_policies(
                ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                ee_policy=_leaf_policy(),
            )
            .build_server_verifier(x509.DNSName(host))
        )
        try:
            verifier.verify(leaf, [cert for cert in rest if cert is not anchor])
        except verification.VerificationError:
            continue
        return True
    return False
