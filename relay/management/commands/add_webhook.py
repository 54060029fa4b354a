from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import URLValidator

from relay import webhooks
from tenants.models import Tenant


class Command(BaseCommand):
    help = "Add a webhook for a tenant's message events; prints its secret once."

    def add_arguments(self, parser):
        parser.add_argument("tenant_id", type=int)
        parser.add_argument("url")

    def handle(self, *args, tenant_id, url, **options):
        tenant = Tenant.objects.filter(pk=tenant_id).first()
        if tenant is None:
            raise CommandError(f"No tenant with id {tenant_id}")
        try:
            URLValidator(schemes=["https", "http"])(url)
        except ValidationError:
            raise CommandError(f"Not an http(s) URL: {url}")
        webhook, secret = webhooks.add_webhook(tenant, url)
        self.stdout.write(f"webhook={webhook.pk} secret={secret}")
        self.stdout.write("Keep the secret: it is not shown again.")
