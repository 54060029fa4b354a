"""The one place that builds a DNS resolver, so every lookup honours
POSTERN_DNS_RESOLVER."""

import dns.resolver
from django.conf import settings

from relay.env import parse_hostport


def resolver():
    if not settings.DNS_RESOLVER:
        r = dns.resolver.Resolver()
    else:
        host, port = parse_hostport("POSTERN_DNS_RESOLVER", settings.DNS_RESOLVER, 53)
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [host]
        r.port = port
    r.lifetime = settings.DNS_TIMEOUT
    return r


def txt_strings(name):
    """Each TXT record at name as one string (its character-strings joined),
    or [] when the name or record does not exist."""
    try:
        answer = resolver().resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer]
