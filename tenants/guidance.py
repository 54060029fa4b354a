"""Reading a domain's SPF and DMARC records and saying, in plain words,
whether Postern is authorised and what to change.

Postern relays with the application's own envelope sender (the Return-Path),
an address at the tenant's domain, so SPF is evaluated against that domain
(RFC 7208 section 2.4) and the domain's SPF record must authorise Postern.
"""

import ipaddress
import re
from dataclasses import dataclass, field

from django.conf import settings

from tenants.txt_lookup import FOUND, lookup_txt

GOOD, WARNING, PROBLEM = "good", "warning", "problem"


@dataclass
class Advice:
    status: str
    summary: str
    record: str = ""
    steps: list = field(default_factory=list)


def postern_spf_terms():
    terms = []
    if settings.SPF_INCLUDE:
        terms.append(f"include:{settings.SPF_INCLUDE}")
    for network in settings.SPF_ADDRESSES:
        kind = "ip6" if ":" in network else "ip4"
        terms.append(f"{kind}:{network}")
    return terms


def spf_records(values):
    # RFC 7208 section 4.5: records are the TXT strings that begin "v=spf1"
    # followed by a space or nothing.
    return [v for v in values if re.match(r"(?i)v=spf1( |$)", v)]


def authorises_postern(record):
    """True when record names Postern's include, or lists networks holding
    every Postern address, with a passing qualifier.

    Limit: includes other than Postern's, a=, mx= and redirect= are not
    followed, so a record that reaches Postern only through them is reported
    as not authorising it; the advice then names the exact term to add.
    """
    terms = record.split()[1:]
    passing = [t for t in terms if t[0] not in "-~?"] + [
        t[1:] for t in terms if t[0] == "+"
    ]
    if settings.SPF_INCLUDE and f"include:{settings.SPF_INCLUDE}".lower() in [
        t.lower() for t in passing
    ]:
        return True
    if not settings.SPF_ADDRESSES:
        return False
    networks = []
    for term in passing:
        kind, _, value = term.partition(":")
        if kind.lower() in ("ip4", "ip6"):
            try:
                networks.append(ipaddress.ip_network(value, strict=False))
            except ValueError:
                continue
    return all(
        any(ipaddress.ip_network(a, strict=False).subnet_of(n)
            for n in networks if n.version == ipaddress.ip_network(a).version)
        for a in settings.SPF_ADDRESSES
    )


def with_postern_added(record):
    """record with Postern's terms placed before its final all or redirect."""
    terms = record.split()
    for i, term in enumerate(terms):
        bare = term.lstrip("+-~?").lower()
        if bare == "all" or bare.startswith("redirect="):
            return " ".join(terms[:i] + postern_spf_terms() + terms[i:])
    return " ".join(terms + postern_spf_terms())


def spf_advice(domain_name):
    if not postern_spf_terms():
        return Advice(WARNING, "This Postern installation has not set what SPF must "
                      "name (POSTERN_SPF_INCLUDE or POSTERN_SPF_ADDRESSES); ask "
                      "the operator.")
    answer = lookup_txt(domain_name)
    if not answer.is_definitive:
        return Advice(WARNING, answer.describe_failure() + " Try again later.")
    records = spf_records(answer.values) if answer.outcome == FOUND else []
    suggested = "v=spf1 " + " ".join(postern_spf_terms()) + " -all"
    if not records:
        return Advice(PROBLEM, f"{domain_name} has no SPF record.", "", [
            f"Publish a TXT record at {domain_name}: {suggested}",
            "If other services also send mail as this domain, add their terms "
            "too, or use ~all instead of -all until you know them all.",
        ])
    if len(records) > 1:
        return Advice(PROBLEM, f"{domain_name} has {len(records)} SPF records. "
                      "Receivers treat that as an error (RFC 7208 section 3.2), so "
                      "SPF fails for all your mail.", " | ".join(records), [
                          "Merge them into one record that includes "
                          + " ".join(postern_spf_terms()) + "."])
    record = records[0]
    if authorises_postern(record):
        return Advice(GOOD, "Your SPF record authorises Postern.", record)
    return Advice(PROBLEM, "Your SPF record does not authorise Postern, so "
                  "receivers will see SPF fail for mail relayed here.", record, [
                      f"Change the TXT record at {domain_name} to: "
                      f"{with_postern_added(record)}"])


def dmarc_tags(record):
    tags = {}
    for part in record.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags[name.strip().lower()] = value.strip()
    return tags


def dmarc_advice(domain_name):
    """Limit: only _dmarc.<domain> is read; a policy the domain inherits from
    its organisational domain (RFC 7489 section 6.6.3) would need the public
    suffix list, and is reported as missing."""
    name = f"_dmarc.{domain_name}"
    answer = lookup_txt(name)
    if not answer.is_definitive:
        return Advice(WARNING, answer.describe_failure() + " Try again later.")
    values = answer.values if answer.outcome == FOUND else []
    records = [v for v in values if v.replace(" ", "").lower().startswith("v=dmarc1")]
    start = f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain_name}"
    if not records:
        return Advice(PROBLEM, f"{domain_name} has no DMARC record, so receivers "
                      "have no policy for mail that forges it.", "", [
                          f"Publish a TXT record at {name}: {start}",
                          "Read the reports for a few weeks, then move to "
                          "p=quarantine and finally p=reject."])
    if len(records) > 1:
        return Advice(PROBLEM, f"{name} has {len(records)} DMARC records; "
                      "receivers then ignore DMARC altogether.", " | ".join(records),
                      ["Keep exactly one DMARC record."])
    record = records[0]
    policy = dmarc_tags(record).get("p", "").lower()
    if policy == "reject":
        return Advice(GOOD, "Policy is reject: receivers refuse mail that forges "
                      "your domain.", record)
    if policy == "quarantine":
        return Advice(WARNING, "Policy is quarantine: forged mail goes to spam. "
                      "Once reports show all your own mail passing, move to "
                      "p=reject.", record, ["Change p=quarantine to p=reject."])
    if policy == "none":
        return Advice(WARNING, "Policy is none: receivers only report, and "
                      "deliver forged mail. Postern signs with your domain's DKIM "
                      "key, so mail relayed here passes; once reports show no "
                      "other legitimate sender failing, tighten the policy.", record,
                      ["Change p=none to p=quarantine, later to p=reject."])
    return Advice(PROBLEM, f"The DMARC record at {name} has no valid p= tag, so "
                  "receivers ignore it.", record, [f"Replace it with: {start}"])


def return_path_advice(domain_name):
    return_path_domain = getattr(settings, "RETURN_PATH_DOMAIN", "")
    if return_path_domain:
        return Advice(GOOD, f"Postern sends with its own bounce address at "
                      f"{return_path_domain}, so SPF is checked for that domain, "
                      "which Postern manages. DMARC passes through your DKIM "
                      "signature, which is aligned with your From domain.")
    return Advice(GOOD, "Postern keeps the envelope sender (Return-Path) your "
                  f"application gives, an address at {domain_name}. Receivers "
                  "check SPF for that domain, so its SPF record must authorise "
                  "Postern; bounces go to that address.")
