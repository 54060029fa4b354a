from django.contrib import admin

from tenants.models import (
    AuditEntry,
    BlockedDomain,
    Credential,
    Domain,
    Invitation,
    Membership,
    Tenant,
)

admin.site.register(Tenant)
admin.site.register(Membership)
admin.site.register(Domain)
admin.site.register(BlockedDomain)


@admin.register(Credential)
class CredentialAdmin(admin.ModelAdmin):
    list_display = ("username", "name", "tenant", "enabled", "last_used_at")
    exclude = ("secret_hash", "previous_secret_hash")


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ("email", "tenant", "role", "expires_at", "accepted_at")
    exclude = ("token_hash",)


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("created_at", "tenant", "actor", "action", "subject")

    def has_change_permission(self, request, obj=None):
        # The audit log is a record; nobody edits it after the fact.
        return False

    def has_delete_permission(self, request, obj=None):
        return False
