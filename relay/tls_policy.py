"""What TLS a delivery must have. Opportunistic unless the tenant, the
operator (per destination) or the domain itself through MTA-STS requires
verified TLS; then a hop that cannot give it is skipped and the delivery is
deferred, never sent in clear.

Where an MX host has DNSSEC-authenticated TLSA records (DANE, RFC 7672,
see relay/dane.py), they decide instead: TLS is required and the
certificate must match them. RFC 8461 section 2 lets no MTA-STS policy
override a failing DANE check, and a matching one is verified TLS for the
tenant's and the operator's requirement too.
"""

from dataclasses import dataclass, field

from django.conf import settings

from relay import dane, mta_sts
from relay.models import DestinationPolicy, TenantDeliverySettings
from relay.smtp_client import OPPORTUNISTIC, TLSRequirement


@dataclass
class DestinationTLS:
    required_by: str = ""  # who requires verified TLS, or "" for none
    sts_policy: object = None
    # MX hosts named in the domain's authenticated MX RRset: only these may
    # use DANE (RFC 7672 section 2.2.1).
    dane_hosts: frozenset = field(default_factory=frozenset)

    def allows(self, hop):
        """RFC 8461 section 4.1: in enforce mode only MX hosts the policy names
        may be used."""
        policy = self.sts_policy
        if policy is None or policy.mode != mta_sts.ENFORCE:
            return True
        return policy.allows(hop.host)

    def requirement(self, hop):
        if hop.host in self.dane_hosts:
            try:
                records = dane.tlsa_records(hop.host, hop.port)
            except dane.LookupFailed as exc:
                return TLSRequirement(required=True, refusal=str(exc))
            if records:
                return self._dane_requirement(hop, records)
        return self._policy_requirement(hop)

    def _dane_requirement(self, hop, records):
        reason = f"TLS required by the DANE TLSA records of {hop.host}"
        usable = tuple(record for record in records if record.usable)
        if usable:
            return TLSRequirement(
                required=True, verify_hostname=hop.host, tlsa=usable, reason=reason
            )
        if self.required_by:
            return self._policy_requirement(hop)
        # RFC 7672 section 2.2: TLSA records that are all unusable still
        # show the host offers TLS, so TLS is mandatory, but unauthenticated.
        # Records with a selector or matching type relay/dane.py does not
        # know count as unusable too (RFC 7671 section 5).
        return TLSRequirement(
            required=True, unauthenticated=True, reason=f"{reason} (none usable)"
        )

    def _policy_requirement(self, hop):
        if not self.required_by:
            return OPPORTUNISTIC
        return TLSRequirement(
            required=True,
            verify_hostname=hop.host,
            ca_file=settings.DELIVERY_CA_FILE,
            reason=f"TLS required by {self.required_by}",
        )


def tls_for(tenant_id, domain, use_mta_sts=True):
    """use_mta_sts: false where the MX hosts do not come from DNS (a transport
    override); then DANE does not apply either."""
    policy = mta_sts.policy_for(domain) if use_mta_sts else None
    dane_hosts = frozenset()
    if use_mta_sts and dane.enabled():
        # A second MX lookup, this one asking for DNSSEC; a hop from
        # routing's lookup uses DANE only if its host is named here too.
        dane_hosts = dane.authenticated_mx_hosts(domain)
    if TenantDeliverySettings.objects.filter(
        tenant_id=tenant_id, tls_required=True
    ).exists():
        return DestinationTLS("the sender's account", policy, dane_hosts)
    if DestinationPolicy.objects.filter(domain=domain, tls_required=True).exists():
        return DestinationTLS(
            "the operator's policy for this domain", policy, dane_hosts
        )
    if policy is not None and policy.mode == mta_sts.ENFORCE:
        return DestinationTLS("the domain's MTA-STS policy", policy, dane_hosts)
    return DestinationTLS(sts_policy=policy, dane_hosts=dane_hosts)
