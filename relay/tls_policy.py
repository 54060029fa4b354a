"""What TLS a delivery must have. Opportunistic unless the tenant, the
operator (per destination) or the domain itself through MTA-STS requires
verified TLS; then a hop that cannot give it is skipped and the delivery is
deferred, never sent in clear.

DANE (RFC 7672) is not done: it needs DNSSEC-validated TLSA answers, and
Postern's resolver set-up does not validate DNSSEC. It should come with a
validating resolver (checking the AD bit from a trusted one).
"""

from dataclasses import dataclass

from django.conf import settings

from relay import mta_sts
from relay.models import DestinationPolicy, TenantDeliverySettings
from relay.smtp_client import OPPORTUNISTIC, TLSRequirement


@dataclass
class DestinationTLS:
    required_by: str = ""  # who requires verified TLS, or "" for none
    sts_policy: object = None

    def allows(self, hop):
        """RFC 8461 section 4.1: in enforce mode only MX hosts the policy names
        may be used."""
        policy = self.sts_policy
        if policy is None or policy.mode != mta_sts.ENFORCE:
            return True
        return policy.allows(hop.host)

    def requirement(self, hop):
        if not self.required_by:
            return OPPORTUNISTIC
        return TLSRequirement(
            required=True,
            verify_hostname=hop.host,
            ca_file=settings.DELIVERY_CA_FILE,
            reason=f"TLS required by {self.required_by}",
        )


def tls_for(tenant_id, domain, use_mta_sts=True):
    policy = mta_sts.policy_for(domain) if use_mta_sts else None
    if TenantDeliverySettings.objects.filter(
        tenant_id=tenant_id, tls_required=True
    ).exists():
        return DestinationTLS("the sender's account", policy)
    if DestinationPolicy.objects.filter(domain=domain, tls_required=True).exists():
        return DestinationTLS("the operator's policy for this domain", policy)
    if policy is not None and policy.mode == mta_sts.ENFORCE:
        return DestinationTLS("the domain's MTA-STS policy", policy)
    return DestinationTLS(sts_policy=policy)
