"""Create an approved tenant with a verified domain, a DKIM key and a
credential in the database named by DATABASE_URL; print them as JSON.

Run as `python -m tests.support.seed_sender DOMAIN [rsa|ed25519]` by the
fault tests and the benchmark, whose databases are not the test runner's.
The domain is marked verified directly: the DNS proof is tested elsewhere,
and these runs are about moving mail.
"""

import json
import os
import sys

import django


def main(domain_name, algorithm):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "relay.settings")
    django.setup()
    from django.utils import timezone

    from tenants.credentials import issue_credential
    from tenants.dkim_keys import generate_key
    from tenants.models import Domain, Tenant

    tenant = Tenant.objects.create(
        name=f"Load of {domain_name}", status=Tenant.APPROVED
    )
    domain = Domain.objects.create(tenant=tenant, name=domain_name,
                                   verified_at=timezone.now())
    key = generate_key(domain, algorithm=algorithm)
    credential, secret = issue_credential(tenant, "Load generator")
    print(json.dumps({
        "username": credential.username,
        "secret": secret,
        "domain": domain_name,
        "dkim_record_name": key.record_name,
        "dkim_record_value": key.record_value,
    }))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "rsa")
