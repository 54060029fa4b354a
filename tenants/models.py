import secrets

from django.conf import settings
from django.db import models


class Tenant(models.Model):
    """A business that relays through Postern once staff have vetted it."""

    PENDING = "pending"
    NEEDS_INFO = "needs_info"
    APPROVED = "approved"
    REJECTED = "rejected"
    SUSPENDED = "suspended"
    STATUSES = [
        (PENDING, "Pending vetting"),
        (NEEDS_INFO, "More information requested"),
        (APPROVED, "Approved"),
        (REJECTED, "Rejected"),
        (SUSPENDED, "Suspended"),
    ]

    # The legal name of the business.
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=STATUSES, default=PENDING)
    # Why staff put the tenant in its current status, shown to the tenant.
    status_reason = models.TextField(blank=True)
    website = models.URLField(blank=True)
    country = models.CharField(max_length=2, blank=True)
    registration_number = models.CharField(max_length=64, blank=True)
    contact_name = models.CharField(max_length=200, blank=True)
    contact_email = models.EmailField(blank=True)
    contact_phone = models.CharField(max_length=40, blank=True)
    # The applications that will send, in the applicant's words.
    applications = models.TextField(blank=True)
    expected_monthly_volume = models.PositiveIntegerField(null=True, blank=True)
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

    @property
    def may_edit(self):
        return self.role in (self.OWNER, self.ADMIN)


class Invitation(models.Model):
    """An offer to join a tenant, redeemed through a link holding the token.
    Only a hash of the token is stored."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="invitations"
    )
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Membership.ROLES)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)


class AuditEntry(models.Model):
    """One decision or notable change: who (None for Postern itself), when,
    what and why."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, null=True, related_name="audit_entries"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    action = models.CharField(max_length=64)
    subject = models.CharField(max_length=300, blank=True)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]


class BlockedDomain(models.Model):
    """A domain (and its subdomains) that no tenant may add or send for."""

    name = models.CharField(max_length=253, unique=True)
    reason = models.TextField()
    blocked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True
    )
    created_at = models.DateTimeField(auto_now_add=True)


def new_verification_token():
    return "postern-verify=" + secrets.token_urlsafe(24)


class Domain(models.Model):
    """A sending domain; Postern signs and relays for it only once verified."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="domains")
    # Several tenants may add the same name, but only one may hold it
    # verified; taking it from another tenant needs staff consent.
    name = models.CharField(max_length=253)
    verification_token = models.CharField(max_length=64, default=new_verification_token)
    verified_at = models.DateTimeField(null=True, blank=True)
    # Set when a re-check no longer found the record (sending stopped).
    verification_lost_at = models.DateTimeField(null=True, blank=True)
    # Staff consent to take over a name another tenant has verified.
    claim_approved_at = models.DateTimeField(null=True, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_check_result = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "name"], name="one_domain_per_tenant"
            ),
            models.UniqueConstraint(
                fields=["name"],
                condition=models.Q(verified_at__isnull=False),
                name="one_verified_owner_per_domain",
            ),
        ]

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

    domain = models.ForeignKey(
        Domain, on_delete=models.CASCADE, related_name="dkim_keys"
    )
    selector = models.CharField(max_length=63)
    algorithm = models.CharField(max_length=16, choices=ALGORITHMS, default=RSA)
    # The private key in PEM (RSA) or raw 32 bytes base64 (Ed25519), sealed
    # with the master key; see relay/secretbox.py.
    private_key_sealed = models.BinaryField()
    public_key_b64 = models.TextField()
    active = models.BooleanField(default=False)
    # When the public key was last found in DNS as published here; a key is
    # made active only after that.
    published_at = models.DateTimeField(null=True, blank=True)
    last_check_result = models.TextField(blank=True)
    # A key replaced by a rotation: no longer signs, but its record must stay
    # published until this time, so that mail already signed still verifies.
    retired_at = models.DateTimeField(null=True, blank=True)
    keep_published_until = models.DateTimeField(null=True, blank=True)
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
