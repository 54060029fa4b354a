"""Creating a tenant that may send, with its records in the test DNS zone."""

from dataclasses import dataclass

from tenants.credentials import issue_credential
from tenants.dkim_keys import generate_key
from tenants.models import Domain, Tenant
from tenants.verification import check_domain


@dataclass
class Sender:
    tenant: Tenant
    domain: Domain
    username: str
    secret: str
    key: object

    @property
    def address(self):
        return f"app@{self.domain.name}"


def make_sender(zone, domain_name="shop.example.test", status=Tenant.APPROVED,
                algorithm="rsa", publish_verification=True):
    tenant = Tenant.objects.create(name=f"Tenant of {domain_name}", status=status)
    domain = Domain.objects.create(tenant=tenant, name=domain_name)
    if publish_verification:
        zone.add_txt(domain.verification_record_name, domain.verification_token)
        verified, explanation = check_domain(domain)
        assert verified, explanation
    key = generate_key(domain, algorithm=algorithm)
    zone.add_txt(key.record_name, key.record_value)
    credential, secret = issue_credential(tenant, "Billing system")
    return Sender(tenant, domain, credential.username, secret, key)


def make_recipient_domain(zone, name="customer.example.net", mx_address="127.0.0.1"):
    """A recipient domain whose MX is the test MX on mx_address."""
    zone.add_mx(name, f"mx1.{name}", 10)
    zone.add_a(f"mx1.{name}", mx_address)
    return name
