import secrets

from django.db import models

from tenants.models import Credential, Tenant


def new_queue_id():
    return secrets.token_hex(8).upper()


class Message(models.Model):
    """One accepted submission: its envelope, its bytes and where it stands.

    The raw bytes live in the row itself so that intake is one transaction:
    the gateway answers 250 only after that commit.
    """

    RECEIVED = "received"
    PROCESSING = "processing"
    QUEUED = "queued"
    DONE = "done"
    REJECTED = "rejected"
    STATES = [
        (RECEIVED, "Received"),
        (PROCESSING, "Processing"),
        (QUEUED, "Queued for delivery"),
        (DONE, "Done"),
        (REJECTED, "Rejected"),
    ]

    queue_id = models.CharField(max_length=16, unique=True, default=new_queue_id)
    tenant = models.ForeignKey(
        Tenant, on_delete=models.PROTECT, related_name="messages"
    )
    credential = models.ForeignKey(
        Credential, on_delete=models.SET_NULL, null=True, related_name="messages"
    )
    mail_from = models.CharField(max_length=320)
    # MAIL FROM parameters to carry through to delivery, e.g.
    # {"RET": "HDRS", "ENVID": "...", "BODY": "8BITMIME", "SMTPUTF8": true}.
    envelope_params = models.JSONField(default=dict, blank=True)
    header_from = models.CharField(max_length=998, blank=True)
    subject = models.CharField(max_length=998, blank=True)
    size = models.PositiveIntegerField()
    client_address = models.GenericIPAddressField(null=True, blank=True)
    raw = models.BinaryField()
    # The bytes as delivered (DKIM signature added). Kept, so that every
    # retry sends exactly the same signed message.
    signed = models.BinaryField(null=True)
    state = models.CharField(max_length=16, choices=STATES, default=RECEIVED)
    state_changed_at = models.DateTimeField(auto_now_add=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["state", "state_changed_at"])]

    def __str__(self):
        return self.queue_id


class Recipient(models.Model):
    QUEUED = "queued"
    SENDING = "sending"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    SUPPRESSED = "suppressed"
    HELD = "held"
    UNCONFIRMED = "unconfirmed"
    STATES = [
        (QUEUED, "Queued"),
        (SENDING, "Sending"),
        (DEFERRED, "Deferred"),
        (DELIVERED, "Delivered"),
        (BOUNCED, "Bounced"),
        (SUPPRESSED, "Suppressed"),
        (HELD, "Held (development mode)"),
        # The message was handed over but the reply was never recorded; see
        # sweeper.expire_claims.
        (UNCONFIRMED, "Unconfirmed"),
    ]
    FINAL_STATES = (DELIVERED, BOUNCED, SUPPRESSED, HELD, UNCONFIRMED)

    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, related_name="recipients"
    )
    address = models.CharField(max_length=320)
    domain = models.CharField(max_length=253)
    # RCPT TO parameters (RFC 3461): {"NOTIFY": "FAILURE,DELAY", "ORCPT": "rfc822;..."}.
    params = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=16, choices=STATES, default=QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Set while one delivery run owns the recipient; see delivery.claim_batch.
    claim_token = models.UUIDField(null=True, blank=True, db_index=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    # Set just before the end of data is sent, cleared when the reply is
    # recorded: a claim that expires with this set may have been delivered.
    data_sent_at = models.DateTimeField(null=True, blank=True)
    last_reply = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["state", "next_attempt_at"])]

    def __str__(self):
        return self.address


class DeliveryAttempt(models.Model):
    recipient = models.ForeignKey(
        Recipient, on_delete=models.CASCADE, related_name="attempts_made"
    )
    remote_host = models.CharField(max_length=255, blank=True)
    remote_address = models.CharField(max_length=64, blank=True)
    reply_code = models.PositiveSmallIntegerField(null=True)
    reply_text = models.TextField(blank=True)
    tls_version = models.CharField(max_length=16, blank=True)
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()


class MessageEvent(models.Model):
    """The history of a message, one line per state change or verdict."""

    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, related_name="events"
    )
    kind = models.CharField(max_length=32)
    detail = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]


class IpPool(models.Model):
    """Source addresses that outbound connections bind to, so that tenants can
    be kept apart and each pool keeps its own sending reputation."""

    name = models.CharField(max_length=100, unique=True)
    # One IPv4 or IPv6 address per line.
    addresses = models.TextField(blank=True)
    # Tenants without a pool of their own send from the default pool; without
    # any default pool the operating system picks the source address.
    is_default = models.BooleanField(default=False)

    def __str__(self):
        return self.name

    @property
    def address_list(self):
        return [line.strip() for line in self.addresses.splitlines() if line.strip()]


class TenantDeliverySettings(models.Model):
    tenant = models.OneToOneField(
        Tenant, on_delete=models.CASCADE, related_name="delivery_settings"
    )
    ip_pool = models.ForeignKey(
        IpPool, on_delete=models.SET_NULL, null=True, blank=True
    )
    # Never deliver in clear and only to a server with a valid certificate.
    tls_required = models.BooleanField(default=False)
    # Every message of the tenant is held for viewing instead of delivered.
    development_mode = models.BooleanField(default=False)


class DestinationPolicy(models.Model):
    """Operator settings for one recipient domain. Empty limits mean the
    platform defaults."""

    domain = models.CharField(max_length=253, unique=True)
    tls_required = models.BooleanField(default=False)
    max_connections = models.PositiveIntegerField(null=True, blank=True)
    messages_per_minute = models.PositiveIntegerField(null=True, blank=True)

    def __str__(self):
        return self.domain


class DestinationSlot(models.Model):
    """One of the connections a destination allows at a time; see
    relay.destinations."""

    domain = models.CharField(max_length=253)
    slot = models.PositiveIntegerField()
    token = models.UUIDField(null=True, blank=True)
    held_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["domain", "slot"], name="one_slot_row")
        ]


class DestinationRate(models.Model):
    """Messages sent to a destination in one minute."""

    domain = models.CharField(max_length=253)
    minute = models.DateTimeField()
    sent = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["domain", "minute"], name="one_rate_row")
        ]


class MtaStsPolicy(models.Model):
    """The last MTA-STS policy fetched for a domain (RFC 8461 section 5.1)."""

    domain = models.CharField(max_length=253, unique=True)
    policy_id = models.CharField(max_length=32)
    mode = models.CharField(max_length=16)
    mx_patterns = models.TextField()
    max_age = models.PositiveIntegerField()
    fetched_at = models.DateTimeField()


class Suppression(models.Model):
    """An address, or a whole domain, that a tenant's mail is no longer sent
    to."""

    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    MANUAL = "manual"
    IMPORTED = "imported"
    REASONS = [
        (HARD_BOUNCE, "Hard bounce"),
        (COMPLAINT, "Complaint"),
        (MANUAL, "Added by hand"),
        (IMPORTED, "Imported"),
    ]

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="suppressions"
    )
    # A lower-cased address ("alice@example.net") or a domain ("example.net").
    entry = models.CharField(max_length=320)
    reason = models.CharField(max_length=16, choices=REASONS)
    detail = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "entry"], name="one_suppression")
        ]
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return self.entry

    @property
    def is_domain(self):
        return "@" not in self.entry


class Webhook(models.Model):
    """Where a tenant wants its message events posted."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="webhooks"
    )
    url = models.URLField(max_length=500)
    # Sealed with the master key (relay.secretbox); signs every post.
    sealed_secret = models.BinaryField()
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)


class WebhookPost(models.Model):
    """One event to post to one webhook, kept until it is accepted or given
    up on (an outbox: written in the same transaction as the state change)."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    STATES = [(PENDING, "Pending"), (SENT, "Sent"), (FAILED, "Failed")]

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="posts")
    event = models.CharField(max_length=32)
    body = models.TextField()
    state = models.CharField(max_length=16, choices=STATES, default=PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(db_index=True)
    last_status = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
