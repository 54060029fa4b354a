from django.db import models


class SecurityEvent(models.Model):
    """Something a client did at the gateway that staff should see: a failed
    login, or an address or username blocked after too many of them."""

    AUTH_FAILED = "auth_failed"
    AUTH_BLOCKED = "auth_blocked"
    KINDS = [(AUTH_FAILED, "Authentication failed"), (AUTH_BLOCKED, "Blocked")]

    kind = models.CharField(max_length=32, choices=KINDS)
    client_address = models.GenericIPAddressField(null=True, blank=True)
    # The username the client gave; never the secret.
    username = models.CharField(max_length=64, blank=True)
    detail = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["client_address", "created_at"])]

    def __str__(self):
        return f"{self.kind} {self.client_address} {self.username}"
