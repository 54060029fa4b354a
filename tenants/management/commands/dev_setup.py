"""Create what the run command needs to send a first message locally."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from tenants.credentials import issue_credential
from tenants.dkim_keys import generate_key
from tenants.models import Domain, Membership, Tenant

DEMO_DOMAIN = "shop.example.test"


class Command(BaseCommand):
    help = (
        "For local development only: a staff user, an approved demo tenant with "
        "the domain shop.example.test marked verified without DNS, a DKIM key and "
        "an SMTP credential. Does nothing if the demo tenant exists."
    )

    def add_arguments(self, parser):
        parser.add_argument("--credentials-file", required=True)

    @transaction.atomic
    def handle(self, *args, credentials_file, **options):
        if Tenant.objects.filter(name="Demo Shop").exists():
            self.stdout.write(
                f"Demo tenant exists; credentials are in {credentials_file}"
            )
            return

        password = secrets.token_urlsafe(12)
        staff = get_user_model().objects.create_superuser("admin", "", password)
        tenant = Tenant.objects.create(name="Demo Shop", status=Tenant.APPROVED)
        Membership.objects.create(user=staff, tenant=tenant, role=Membership.OWNER)
        domain = Domain.objects.create(
            tenant=tenant,
            name=DEMO_DOMAIN,
            verified_at=timezone.now(),
            last_check_result="Marked verified by dev_setup (no DNS check).",
        )
        generate_key(domain)
        credential, secret = issue_credential(tenant, "Demo application")

        with open(credentials_file, "w") as f:
            f.write(
                f"PORTAL_USER=admin\nPORTAL_PASSWORD={password}\n"
                f"SMTP_USERNAME={credential.username}\nSMTP_SECRET={secret}\n"
                f"SENDER=app@{DEMO_DOMAIN}\n"
            )
        self.stdout.write(
            f"Demo tenant created; credentials written to {credentials_file}"
        )
