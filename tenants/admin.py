from django.contrib import admin

from tenants.models import Credential, Domain, Membership, Tenant

admin.site.register(Tenant)
admin.site.register(Membership)
admin.site.register(Domain)


@admin.register(Credential)
class CredentialAdmin(admin.ModelAdmin):
    list_display = ("username", "name", "tenant", "enabled", "last_used_at")
    exclude = ("secret_hash",)
