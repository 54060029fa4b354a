import secrets

from django.conf import settings
from django.db import models


class Tenant(models.Model):
    """A business that relays through Postern once staff have vetted it."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    SUSPENDED = "suspended"
    STATUSES = [
        (PENDING, "Pending vetting"),
        (APPROVED, "Approved"),
        (REJECTED, "Rejected"),
        (SUSPENDED, "Suspended"),
    ]

    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=STATUSES, default=PENDING)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.name

    @property
    def may_send(self):
        return self.status == self.APPROVED


class Membership(models.Model):
    OWNER = "owner"
    ADMIN = "admin"
    VIEWER = "viewer"
    ROLES = [(OWNER, "Owner"), (ADMIN, "Admin"), (VIEWER, "Viewer")]

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE)
    role = models.CharField(max_length=16, choices=ROLES, default=VIEWER)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "tenant"], name="one_membership")
        ]


def new_verification_token():
    return "postern-verify=" + secrets.token_urlsafe(24)


class Domain(models.Model):
    """A sending domain; Postern signs and relays for it only once verified."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="domains")
    name = models.CharField(max_length=253, unique=True)
    verification_token = models.CharField(max_length=64, default=new_verification_token)
    verified_at = models.DateTimeField(null=True, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_check_result = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.name

    @property
    def is_verified(self):
        return self.verified_at is not None

    @property
    def verification_record_name(self):
        return f"_postern.{self.name}"


class DkimKey(models.Model):
    RSA = "rsa"
    ED25519 = "ed25519"
    ALGORITHMS = [(RSA, "RSA-2048"), (ED25519, "Ed25519")]

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="dkim_keys")
    selector = models.CharField(max_length=63)
    algorithm = models.CharField(max_length=16, choices=ALGORITHMS, default=RSA)
    # The private key in PEM (RSA) or raw 32 bytes base64 (Ed25519), sealed
    # with the master key; see relay/secretbox.py.
    private_key_sealed = models.BinaryField()
    public_key_b64 = models.TextField()
    active = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["domain", "selector"], name="one_selector"),
            models.UniqueConstraint(
                fields=["domain"],
                condition=models.Q(active=True),
                name="one_active_key_per_domain",
            ),
        ]

    @property
    def record_name(self):
        return f"{self.selector}._domainkey.{self.domain.name}"

    @property
    def record_value(self):
        return f"v=DKIM1; k={self.algorithm}; p={self.public_key_b64}"


class Credential(models.Model):
    """SMTP AUTH credentials for one application of a tenant (a CRM, a billing
    system, a SaaS vendor), with what it may do. A limit left empty means the
    platform default."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="credentials"
    )
    name = models.CharField(max_length=100)
    username = models.CharField(max_length=64, unique=True)
    secret_hash = models.CharField(max_length=64)
    # During a rotation the previous secret keeps working until this time.
    previous_secret_hash = models.CharField(max_length=64, blank=True)
    previous_secret_valid_until = models.DateTimeField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # One pattern per line, e.g. "*@shop.example.com" or
    # "billing@shop.example.com", over the tenant's verified domains; applied
    # to the envelope sender and the From, Sender and Reply-To headers. Empty:
    # any address at any verified domain of the tenant.
    allowed_identities = models.TextField(blank=True)
    # One address or CIDR per line; empty: any source address.
    allowed_networks = models.TextField(blank=True)
    max_message_size = models.PositiveIntegerField(null=True, blank=True)
    max_recipients = models.PositiveIntegerField(null=True, blank=True)
    max_connections = models.PositiveIntegerField(null=True, blank=True)
    messages_per_minute = models.PositiveIntegerField(null=True, blank=True)
    messages_per_hour = models.PositiveIntegerField(null=True, blank=True)
    messages_per_day = models.PositiveIntegerField(null=True, blank=True)
    bytes_per_hour = models.PositiveBigIntegerField(null=True, blank=True)
    bytes_per_day = models.PositiveBigIntegerField(null=True, blank=True)
    # Development mode: mail is processed fully but held for viewing in the
    # portal instead of being delivered.
    development_mode = models.BooleanField(default=False)
    tags = models.CharField(max_length=200, blank=True)
    notes = models.TextField(blank=True)
    owner_contact = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_from = models.GenericIPAddressField(null=True, blank=True)

    def __str__(self):
        return f"{self.name} ({self.username})"
