from django.contrib import admin

from smtp_gateway.models import SecurityEvent


@admin.register(SecurityEvent)
class SecurityEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "kind", "client_address", "username", "detail")
    list_filter = ("kind",)
    search_fields = ("client_address", "username")
    readonly_fields = list_display

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
