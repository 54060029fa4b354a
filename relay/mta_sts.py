"""MTA-STS (RFC 8461): a domain's published promise that its MX hosts offer
valid TLS, fetched over HTTPS and cached.

Known limits: TLS reporting (RFC 8460) is not sent, and a policy is only
refreshed when a message goes to the domain (no background refresh,
section 10.2).
"""

import http.client
import logging
import socket
import ssl
from dataclasses import dataclass
from datetime import timedelta

import dns.exception
import dns.resolver
from django.conf import settings
from django.utils import timezone

from relay.dns import resolver, txt_strings
from relay.models import MtaStsPolicy

log = logging.getLogger("postern.mta_sts")

ENFORCE, TESTING, NONE = "enforce", "testing", "none"
# Section 3.3: a policy body is at most 64 KiB.
MAX_POLICY_SIZE = 64 * 1024
# Section 3.2: max_age is at most 31557600 seconds.
MAX_AGE_LIMIT = 31557600


@dataclass
class Policy:
    mode: str
    mx_patterns: list

    def allows(self, mx_host):
        return any(_matches(pattern, mx_host) for pattern in self.mx_patterns)


def _matches(pattern, host):
    """Section 4.1: "*.example.com" matches one leftmost label only."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return host == pattern


class PolicyError(Exception):
    pass


def policy_for(domain):
    """The domain's policy in force, or None when it has none."""
    cached = MtaStsPolicy.objects.filter(domain=domain).first()
    fresh = cached and timezone.now() < cached.fetched_at + timedelta(
        seconds=cached.max_age
    )
    try:
        policy_id = _published_id(domain)
    except dns.exception.DNSException:
        policy_id = None
    if policy_id is None:
        # Section 5.1: without a TXT record a cached, unexpired policy still
        # applies; that is what keeps a downgrade attack from working.
        return _as_policy(cached) if fresh else None
    if fresh and cached.policy_id == policy_id:
        return _as_policy(cached)
    try:
        text = fetch_policy_text(domain)
        mode, patterns, max_age = parse_policy(text)
    except (
        PolicyError,
        OSError,
        ssl.SSLError,
        http.client.HTTPException,
        dns.exception.DNSException,
    ) as exc:
        log.warning("event=mta_sts_fetch_failed domain=%s problem=%s", domain, exc)
        return _as_policy(cached) if fresh else None
    MtaStsPolicy.objects.update_or_create(
        domain=domain,
        defaults=dict(
            policy_id=policy_id,
            mode=mode,
            mx_patterns="\n".join(patterns),
            max_age=max_age,
            fetched_at=timezone.now(),
        ),
    )
    return Policy(mode, patterns)


def _as_policy(row):
    return Policy(row.mode, row.mx_patterns.split("\n"))


def _published_id(domain):
    """The id of the _mta-sts TXT record (section 3.1), or None."""
    records = [t for t in txt_strings(f"_mta-sts.{domain}") if t.startswith("v=STSv1")]
    if len(records) != 1:
        return None  # none, or several: section 3.1 says treat as absent
    fields = dict(
        part.strip().split("=", 1) for part in records[0].split(";") if "=" in part
    )
    return fields.get("id", "").strip() or None


def fetch_policy_text(domain):
    """GET https://mta-sts.DOMAIN/.well-known/mta-sts.txt (section 3.3): the
    certificate must be valid for that name, and redirects are not followed."""
    host = f"mta-sts.{domain}"
    address = _first_address(host)
    context = ssl.create_default_context(cafile=settings.MTA_STS_CA_FILE or None)
    timeout = settings.DNS_TIMEOUT + 10
    with socket.create_connection((address, settings.MTA_STS_PORT), timeout) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            request = (
                f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\n"
                "User-Agent: Postern\r\nConnection: close\r\n\r\n"
            )
            tls.sendall(request.encode("ascii"))
            response = http.client.HTTPResponse(tls)
            response.begin()
            if response.status != 200:
                raise PolicyError(f"HTTP {response.status}")
            content_type = response.getheader("Content-Type", "")
            if content_type.split(";")[0].strip().lower() != "text/plain":
                raise PolicyError(f"Content-Type {content_type!r}")
            body = response.read(MAX_POLICY_SIZE + 1)
    if len(body) > MAX_POLICY_SIZE:
        raise PolicyError("policy larger than 64 KiB")
    return body.decode("utf-8", "replace")


def _first_address(host):
    r = resolver()
    for rdtype in ("A", "AAAA"):
        try:
            return r.resolve(host, rdtype)[0].address
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            continue
    raise PolicyError(f"{host} has no address")


def parse_policy(text):
    """(mode, mx patterns, max_age) from a policy body (section 3.2)."""
    fields, patterns = {}, []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "mx":
            patterns.append(value)
        else:
            fields.setdefault(key, value)
    if fields.get("version") != "STSv1":
        raise PolicyError("version is not STSv1")
    mode = fields.get("mode", "")
    if mode not in (ENFORCE, TESTING, NONE):
        raise PolicyError(f"unknown mode {mode!r}")
    max_age = fields.get("max_age", "")
    if not max_age.isdigit():
        raise PolicyError("max_age missing or not a number")
    if mode != NONE and not patterns:
        raise PolicyError("no mx patterns")
    return mode, patterns, min(int(max_age), MAX_AGE_LIMIT)
