"""Staff settings for delivery in Django's admin: IP pools, per-tenant
delivery settings and per-destination policies. Webhooks are added with
`manage.py add_webhook`, which shows the signing secret once."""

from django.contrib import admin

from relay.models import DestinationPolicy, IpPool, TenantDeliverySettings, Webhook


@admin.register(IpPool)
class IpPoolAdmin(admin.ModelAdmin):
    list_display = ["name", "addresses", "is_default"]


@admin.register(TenantDeliverySettings)
class TenantDeliverySettingsAdmin(admin.ModelAdmin):
    list_display = ["tenant", "ip_pool", "tls_required", "development_mode"]


@admin.register(DestinationPolicy)
class DestinationPolicyAdmin(admin.ModelAdmin):
    list_display = ["domain", "tls_required", "max_connections", "messages_per_minute"]


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ["tenant", "url", "enabled", "created_at"]
    # The sealed secret is neither shown nor edited here.
    fields = ["tenant", "url", "enabled"]
    readonly_fields = ["tenant"]

    def has_add_permission(self, request):
        return False
