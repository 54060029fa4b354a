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
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="messages")
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
    STATES = [
        (QUEUED, "Queued"),
        (SENDING, "Sending"),
        (DEFERRED, "Deferred"),
        (DELIVERED, "Delivered"),
        (BOUNCED, "Bounced"),
    ]
    FINAL_STATES = (DELIVERED, BOUNCED)

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="recipients")
    address = models.CharField(max_length=320)
    domain = models.CharField(max_length=253)
    # RCPT TO parameters (RFC 3461): {"NOTIFY": "FAILURE,DELAY", "ORCPT": "rfc822;..."}.
    params = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=16, choices=STATES, default=QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Set while one delivery run owns the recipient; see pipeline.claim_recipients.
    claim_token = models.UUIDField(null=True, blank=True, db_index=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
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

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=32)
    detail = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
