"""Where mail for a domain goes: MX lookup per RFC 5321 section 5.1 (and
null MX, RFC 7505), then for each address to try, the source address to bind
and the TLS the connection must have."""

import random
from dataclasses import dataclass

import dns.exception
import dns.resolver
from django.conf import settings

from relay import pools, tls_policy
from relay.dns import resolver
from relay.smtp_client import TLSRequirement


@dataclass(frozen=True)
class Hop:
    """One address to try: the MX host's name and one of its addresses."""

    host: str
    address: str
    port: int


class RouteError(Exception):
    def __init__(self, permanent, status, text):
        super().__init__(text)
        self.permanent = permanent
        self.status = status
        self.text = text


def _temporary(text):
    return RouteError(False, "4.4.3", text)


def _addresses(r, host):
    found = []
    for rdtype in ("A", "AAAA"):
        try:
            found += [rdata.address for rdata in r.resolve(host, rdtype)]
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            pass
    return found


def _exchanges(r, domain):
    """MX host names in the order to try them, or [domain] for the implicit MX."""
    try:
        answer = r.resolve(domain, "MX")
    except dns.resolver.NXDOMAIN:
        raise RouteError(True, "5.1.2", f"Domain {domain} does not exist")
    except dns.resolver.NoAnswer:
        # No MX: the domain itself is the implicit MX (RFC 5321 section 5.1).
        return [domain]
    records = [(rd.preference, str(rd.exchange).rstrip(".").lower()) for rd in answer]
    if len(records) == 1 and records[0][1] == "":
        raise RouteError(True, "5.1.10", f"Domain {domain} accepts no mail (null MX)")
    # Equal preferences are tried in random order to spread the load
    # (RFC 5321 section 5.1).
    random.shuffle(records)
    records.sort(key=lambda record: record[0])
    return [host for _, host in records if host]


def _override(domain):
    return settings.TRANSPORT_OVERRIDES.get(domain) or settings.TRANSPORT_OVERRIDES.get(
        "*"
    )


def hops_for(domain):
    override = _override(domain)
    if override:
        host, port = override
        return [Hop(host=host, address=host, port=port)]

    r = resolver()
    try:
        hops = [
            Hop(host=host, address=address, port=settings.DELIVERY_PORT)
            for host in _exchanges(r, domain)
            for address in _addresses(r, host)
        ]
    except dns.exception.Timeout:
        raise _temporary(f"DNS lookup for {domain} timed out")
    except dns.resolver.NoNameservers:
        raise _temporary(f"No DNS server answered for {domain}")
    if not hops:
        raise RouteError(
            True, "5.1.2", f"No address found for the mail hosts of {domain}"
        )
    return hops


@dataclass(frozen=True)
class Leg:
    """One way to try: a hop, the local address to leave from (None: any) and
    the TLS the session must have."""

    hop: Hop
    source_address: str | None
    tls: TLSRequirement


def plan(domain, tenant_id):
    """The legs to try in order for the tenant's mail to domain; RouteError
    when there are none."""
    hops = hops_for(domain)
    tls = tls_policy.tls_for(tenant_id, domain, use_mta_sts=not _override(domain))
    pool = pools.pool_for(tenant_id)

    legs, skipped = [], []
    for hop in hops:
        if not tls.allows(hop):
            skipped.append(f"{hop.host} is not in the MTA-STS policy")
            continue
        try:
            source = pools.source_address(pool, hop)
        except pools.NoSourceAddress as exc:
            skipped.append(f"{hop.host}[{hop.address}]: {exc}")
            continue
        legs.append(Leg(hop, source, tls.requirement(hop)))
    if not legs:
        # Temporary: the policy or the pool may change, and RFC 8461 section
        # 5 asks for the message to wait rather than go elsewhere.
        raise RouteError(False, "4.7.5", f"No usable mail host: {'; '.join(skipped)}")
    return legs
