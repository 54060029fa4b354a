"""Where mail for a domain goes: MX lookup per RFC 5321 section 5.1."""

import random
from dataclasses import dataclass

import dns.exception
import dns.resolver
from django.conf import settings

from relay.dns import resolver


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


def hops_for(domain):
    override = settings.TRANSPORT_OVERRIDES.get(domain) or settings.TRANSPORT_OVERRIDES.get("*")
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
        raise RouteError(True, "5.1.2", f"No address found for the mail hosts of {domain}")
    return hops
