"""Delivery, in the order a batch goes through it.

deliver_to_domain: claim a batch of due recipients at one domain (several
messages of one tenant) → drop the suppressed, hold development mail → route
→ take a connection slot → one SMTP session (or one an earlier run left
open), over which batch after batch is sent → settle each batch in a few
statements → report failures. Safe to run twice for the same message.
"""

import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from relay import (
    bounces,
    destinations,
    dsn,
    routing,
    session_cache,
    smtp_client,
    suppression,
    webhooks,
)
from relay.events import record_all
from relay.models import (
    DeliveryAttempt,
    Message,
    Recipient,
    Suppression,
    TenantDeliverySettings,
)

log = logging.getLogger("postern.delivery")

# A batch holds its messages' bytes in memory: it takes messages up to this
# many bytes together (always at least one).
BATCH_BYTES = 16 * 1024 * 1024


@dataclass(eq=False)
class Item:
    """One message and its recipients at the batch's domain."""

    message: Message
    recipients: list
    started: datetime | None = None  # when its transaction began


@dataclass
class Batch:
    """The recipients at one domain that one run owns (its claim token),
    grouped by message, in the order they are sent."""

    token: uuid.UUID
    tenant_id: int
    items: list = field(default_factory=list)


@dataclass
class Outcome:
    """What became of one recipient in one attempt: the reply, and the
    attempt to record (None when no server was reached)."""

    message: Message
    recipient: Recipient
    reply: smtp_client.Reply
    attempt: DeliveryAttempt | None = None


def deliver_to_domain(message_id, domain):
    """Deliver what is due at domain for the message's tenant (the message's
    own recipients with the rest)."""
    tenant_id = (
        Message.objects.filter(pk=message_id, state=Message.QUEUED)
        .values_list("tenant_id", flat=True)
        .first()
    )
    if tenant_id is not None:
        deliver_due(domain, tenant_id)


def deliver_due(domain, tenant_id):
    """Deliver the tenant's due recipients at domain, one session after
    another until none are left."""
    while True:
        batch = claim_batch(domain, tenant_id)
        if batch is None:
            return
        try:
            more = deliver_batches(domain, batch)
        except Exception:
            give_back_after_error(batch)
            raise
        if not more:
            return


def give_back_after_error(batch):
    """An error of ours stopped the run: the recipients it had not yet sent
    to are deferred with a reason the sender can read, so that they are tried
    again and bounce in the end instead of waiting in "Sending" for the
    sweeper and failing the same way each time. Those whose data may have
    gone out are left to the sweeper, which does not send them again."""
    log.exception("event=delivery_error tenant=%s", batch.tenant_id)
    reply = smtp_client.Reply(451, "4.3.0 Internal error while delivering")
    unsent = Recipient.objects.filter(claim_token=batch.token, data_sent_at=None)
    owned = set(unsent.values_list("pk", flat=True))
    settle(
        batch.token,
        [
            Outcome(item.message, rcpt, reply)
            for item in batch.items
            for rcpt in item.recipients
            if rcpt.pk in owned
        ],
    )


def deliver_batches(domain, batch):
    """One session for batch and those after it (a session an earlier run
    left open, or a new one); True when it ended because the session had
    carried its share of messages and more may be due."""
    kept = session_cache.take(domain, batch.tenant_id)
    slot = destinations.take_slot(domain)
    if slot is None:
        if kept is not None:
            kept[0].close()
        postpone(batch, "destination busy: connection limit reached")
        return False
    try:
        with ClaimKeeper(batch):
            if kept is not None:
                full = send_over_kept_session(kept, domain, batch)
                if full is not None:
                    return full
            try:
                legs = routing.plan(domain, batch.tenant_id)
            except routing.RouteError as exc:
                code = 550 if exc.permanent else 451
                reply = smtp_client.Reply(code, f"{exc.status} {exc.text}")
                settle_remaining(batch, reply)
                return False
            return deliver_over_one_session(legs, domain, batch)
    finally:
        destinations.release_slot(domain, slot)


class ClaimKeeper:
    """Renews the claim on the batch a run is sending, from a thread, every
    third of DELIVERY_CLAIM_LEASE. One transaction to a slow server can last
    longer than the lease (a command timeout per recipient, then the
    end-of-data timeout); meanwhile the sweeper must not hand the recipients
    to another run, which would send them again."""

    def __init__(self, batch):
        self.batch = batch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="claim-keeper")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _renew(self):
        try:
            while not self._stop.wait(settings.DELIVERY_CLAIM_LEASE / 3):
                try:
                    Recipient.objects.filter(claim_token=self.batch.token).update(
                        claimed_at=timezone.now()
                    )
                except Exception:
                    log.exception("event=claim_renewal_failed")
        finally:
            connection.close()


def send_over_kept_session(kept, domain, batch):
    """Send over a session an earlier run left open. None when it broke (most
    often the server closed it while it waited): what is left of the batch
    then goes over a new session, and the broken one counts as no attempt."""
    session, leg = kept
    try:
        return send_and_keep(session, leg, domain, batch)
    except smtp_client.ConnectionProblem:
        session.abandon()
        return None


def claim_batch(domain, tenant_id):
    """Claim the due recipients at domain of the tenant's oldest queued
    messages, settle those that are suppressed or held, and return the rest as
    a Batch (None if none)."""
    now = timezone.now()
    due = Recipient.objects.filter(
        domain=domain, state__in=[Recipient.QUEUED, Recipient.DEFERRED]
    ).exclude(next_attempt_at__gt=now)
    candidates = (
        Message.objects.filter(
            tenant_id=tenant_id, state=Message.QUEUED, pk__in=due.values("message_id")
        )
        .order_by("pk")
        .values_list("pk", "size")[: settings.DELIVERY_BATCH]
    )
    message_ids = within_batch_bytes(candidates)
    if not message_ids:
        return None

    # A claim token, set by one conditional update, marks the recipients this
    # run owns: two runs for the same domain (a redelivered task, the
    # sweeper, another worker's run) never both send to one recipient. The
    # update filters on the recipient's own columns only: a condition through
    # a join would become a subquery that PostgreSQL does not check again
    # after waiting for the row lock, and both runs would win.
    token = uuid.uuid4()
    due.filter(message_id__in=message_ids).update(
        state=Recipient.SENDING, claim_token=token, claimed_at=now
    )
    recipients = list(Recipient.objects.filter(claim_token=token).order_by("pk"))
    if not recipients:
        return None
    messages = (
        Message.objects.select_related("credential")
        .defer("raw")
        .in_bulk({r.message_id for r in recipients})
    )
    batch = Batch(token, tenant_id)
    for message_id in sorted(messages):
        mine = [r for r in recipients if r.message_id == message_id]
        batch.items.append(Item(messages[message_id], mine))

    drop_suppressed(batch)
    hold_development_mail(batch)
    if not batch.items:
        return None
    return batch


def within_batch_bytes(candidates):
    chosen, total = [], 0
    for message_id, size in candidates:
        if chosen and total + size > BATCH_BYTES:
            break
        chosen.append(message_id)
        total += size
    return chosen


def drop_suppressed(batch):
    addresses = [r.address for item in batch.items for r in item.recipients]
    found = suppression.suppressions_for(batch.tenant_id, addresses)
    if not found:
        return
    outcomes = []
    for item in batch.items:
        for rcpt in [r for r in item.recipients if r.address in found]:
            entry = found[rcpt.address]
            reason = entry.get_reason_display()
            detail = f"on the suppression list: {entry.entry} ({reason})"
            item.recipients.remove(rcpt)
            outcomes.append((item.message, rcpt, detail))
    batch.items = [item for item in batch.items if item.recipients]
    end_without_sending(batch.token, outcomes, Recipient.SUPPRESSED)


def hold_development_mail(batch):
    tenant_holds = TenantDeliverySettings.objects.filter(
        tenant_id=batch.tenant_id, development_mode=True
    ).exists()
    outcomes = []
    for item in list(batch.items):
        credential = item.message.credential
        if tenant_holds or (credential is not None and credential.development_mode):
            batch.items.remove(item)
            detail = "held: development mode"
            outcomes += [(item.message, r, detail) for r in item.recipients]
    end_without_sending(batch.token, outcomes, Recipient.HELD)


def end_without_sending(token, outcomes, state):
    """Settle recipients that are not sent to at all (suppressed, held):
    outcomes are (message, recipient, detail). Rare enough for a statement
    each."""
    if not outcomes:
        return
    with transaction.atomic():
        kept = [
            (message, rcpt, detail)
            for message, rcpt, detail in outcomes
            if Recipient.objects.filter(pk=rcpt.pk, claim_token=token).update(
                state=state, last_reply=detail, claim_token=None
            )
        ]
        record_all([(m, state, f"to={r.address} {d}") for m, r, d in kept])
        webhooks.announce_all([(m, state, r, d) for m, r, d in kept])
    finish_done({message.pk for message, _, _ in outcomes})


def deliver_over_one_session(legs, domain, batch):
    """Try the legs in order until one gives a session; send the batch, then
    further batches of the same tenant for the same domain over that session
    (RFC 5321 section 3.3 allows many transactions per session). True when
    the session stopped at DELIVERY_MESSAGES_PER_SESSION."""
    problem = None
    for leg in legs:
        started = timezone.now()
        session = smtp_client.Session(
            leg.hop, settings.DELIVERY_HELO, settings.DELIVERY_TIMEOUT,
            source_address=leg.source_address, tls=leg.tls,
            data_timeout=settings.DELIVERY_DATA_TIMEOUT,
        )
        try:
            refusal = session.open()
            if refusal is not None:
                session.close()
                problem = refusal
                record_attempts(batch, leg.hop, refusal, started)
                continue
            return send_and_keep(session, leg, domain, batch)
        except smtp_client.ConnectionProblem as exc:
            # What is left of the batch goes on to the next leg; what was sent
            # over this session is settled.
            session.abandon()
            hop = leg.hop
            where = f"{hop.host}[{hop.address}]"
            problem = smtp_client.Reply(451, f"{exc.status} {where}: {exc}")
            record_attempts(batch, leg.hop, problem, started)
        except BaseException:
            session.abandon()
            raise
    settle_remaining(batch, problem)
    return False


def send_and_keep(session, leg, domain, batch):
    """Send the batch and the batches after it; then leave the session open
    for the next run to this destination, unless it carried its share."""
    try:
        full = send_batches(session, leg, domain, batch)
    except ClaimLost:
        session.abandon()
        log.warning("event=claim_lost domain=%s", domain)
        postpone(batch, "the delivery run's claim had expired")
        return False
    if full:
        session.close()
    else:
        session_cache.keep(domain, batch.tenant_id, session, leg)
    return full


class ClaimLost(Exception):
    """The sweeper took the batch back from this run (its claim outlived the
    lease): the run must send nothing more of it."""


def send_batches(session, leg, domain, batch):
    """Send batch after batch; batch always holds the one in hand, so that
    the caller sees what is left when the session breaks."""
    _, per_minute = destinations.limits_for(domain)
    while True:
        send_batch(session, leg, domain, per_minute, batch)
        if batch.items:
            postpone(batch, "destination busy: message rate limit reached")
            return False
        if session.transactions >= settings.DELIVERY_MESSAGES_PER_SESSION:
            return True
        following = claim_batch(domain, batch.tenant_id)
        if following is None:
            return False
        batch.token, batch.items = following.token, following.items


# Seconds a batch's outcomes wait at most before they are recorded.
SETTLE_EVERY = 1.0


def send_batch(session, leg, domain, per_minute, batch):
    """Send the batch's messages one after another and settle those sent, even
    when the session breaks half way. What stays in batch.items was stopped
    by the destination's rate limit or by the break (then possibly delivered:
    see Session.send).

    Outcomes are recorded together, but at least every SETTLE_EVERY seconds,
    so that a slow server's replies show up while the batch goes on."""
    outcomes = []
    last_settled = time.monotonic()

    def known(item, replies):
        """Record the recipients of item that replies cover; the item leaves
        the batch once none is left."""
        for rcpt in [r for r in item.recipients if r.address in replies]:
            reply = replies[rcpt.address]
            attempt = new_attempt(
                rcpt, leg.hop, reply, session.tls_version, item.started
            )
            outcomes.append(Outcome(item.message, rcpt, reply, attempt))
            item.recipients.remove(rcpt)
        if not item.recipients:
            batch.items.remove(item)

    def completed(done):
        for item, result in done:
            if result is None:  # not sent: the claim was taken back
                batch.items.remove(item)
                raise ClaimLost()
            known(item, result.replies)

    try:
        for item in list(batch.items):
            if not destinations.take_send_permit(domain, per_minute):
                break
            item.started = timezone.now()
            completed(send_item(session, batch.token, item))
            if outcomes and time.monotonic() - last_settled > SETTLE_EVERY:
                settle(batch.token, outcomes)
                outcomes, last_settled = [], time.monotonic()
        completed(session.finish())
    except smtp_client.ConnectionProblem as problem:
        # Replies read before the break stand (a recipient refused at RCPT
        # stays refused); the rest of the batch is left to the caller.
        for item, result in problem.completed:
            known(item, result.replies)
        raise
    finally:
        settle(batch.token, outcomes)


def send_item(session, token, item):
    """Send one message over the session; returns [(item, TransactionResult)]
    for the messages this completed (with PIPELINING, the one before); the
    result is None for one this run no longer owns. A ConnectionProblem from
    here leaves the items not completed to the caller."""
    message = item.message
    mail_options, rcpts = envelope_options(session, message, item.recipients)

    def mark(accepted):
        return mark_data_sent(token, message, accepted)

    return_path = bounces.return_path_for(message)
    data = bytes(message.signed)
    return session.send(return_path, mail_options, rcpts, data, mark, tag=item)


def envelope_options(session, message, recipients):
    """MAIL and RCPT parameters for this message, as far as the server
    supports them: BODY (RFC 6152), SMTPUTF8 (RFC 6531) and the DSN
    parameters (RFC 3461), passed on so the server reports as asked."""
    params = message.envelope_params
    mail_options = []
    if session.supports("8bitmime"):
        mail_options.append("BODY=8BITMIME")
    if params.get("SMTPUTF8") and session.supports("smtputf8"):
        mail_options.append("SMTPUTF8")
    dsn_ok = session.supports("dsn")
    if dsn_ok and params.get("RET"):
        mail_options.append(f"RET={params['RET']}")
    if dsn_ok and params.get("ENVID"):
        mail_options.append(f"ENVID={smtp_client.xtext(params['ENVID'])}")

    rcpts = []
    for rcpt in recipients:
        options = []
        if dsn_ok and rcpt.params.get("NOTIFY"):
            options.append(f"NOTIFY={rcpt.params['NOTIFY']}")
        if dsn_ok and rcpt.params.get("ORCPT"):
            kind, _, address = rcpt.params["ORCPT"].partition(";")
            options.append(f"ORCPT={kind};{smtp_client.xtext(address)}")
        rcpts.append((rcpt.address, options))
    return mail_options, rcpts


def mark_data_sent(token, message, accepted):
    # Written (and committed) right before the message and its end mark go
    # out. If the run dies after this, the sweeper finds the mark and does
    # not send again (sweeper.expire_claims). What remains: a run killed
    # between this commit and the write to the socket leaves a recipient
    # marked unconfirmed that never got the message; a run killed after the
    # server's 250 but before its batch is settled leaves one that did.
    # Either way it is sent at most once and shown as unconfirmed, never
    # silently.
    #
    # Only while this run still owns every one of them: a claim the sweeper
    # has taken back means the recipients may be another run's now, and
    # nothing is sent (returns False).
    marked = Recipient.objects.filter(
        claim_token=token, address__in=accepted, message_id=message.pk
    ).update(data_sent_at=timezone.now())
    return marked == len(set(accepted))


def new_attempt(rcpt, hop, reply, tls_version, started):
    """An unsaved DeliveryAttempt; settle() writes them in one insert."""
    return DeliveryAttempt(
        recipient=rcpt,
        remote_host=hop.host,
        remote_address=hop.address,
        reply_code=reply.code,
        reply_text=reply.text[:2000],
        tls_version=tls_version,
        started_at=started,
        duration_ms=int((timezone.now() - started).total_seconds() * 1000),
    )


def record_attempts(batch, hop, reply, started):
    DeliveryAttempt.objects.bulk_create(
        new_attempt(rcpt, hop, reply, "", started)
        for item in batch.items
        for rcpt in item.recipients
    )


def settle_remaining(batch, reply):
    settle(
        batch.token,
        [Outcome(i.message, r, reply) for i in batch.items for r in i.recipients],
    )
    batch.items = []


# One statement for the whole batch; each row is updated only while this
# run's claim token is on it (checked again after the row lock), so a claim
# the sweeper expired meanwhile is left alone.
SETTLE_SQL = """
UPDATE relay_recipient AS r
SET state = v.state, attempts = v.attempts, last_reply = v.last_reply,
    delivered_at = v.delivered_at, next_attempt_at = v.next_attempt_at,
    claim_token = NULL, data_sent_at = NULL
FROM unnest(%s::bigint[], %s::varchar[], %s::integer[], %s::text[],
            %s::timestamptz[], %s::timestamptz[])
     AS v(id, state, attempts, last_reply, delivered_at, next_attempt_at)
WHERE r.id = v.id AND r.claim_token = %s
RETURNING r.id
"""
SETTLED_FIELDS = ["state", "attempts", "last_reply", "delivered_at", "next_attempt_at"]


def store_settled(token, recipients):
    """Write the recipients' new state where this run still owns them;
    returns the ids written."""
    if connection.vendor != "postgresql":
        # SQLite (the development default) has no arrays: a statement each.
        return {
            r.pk
            for r in recipients
            if Recipient.objects.filter(pk=r.pk, claim_token=token).update(
                claim_token=None, data_sent_at=None,
                **{name: getattr(r, name) for name in SETTLED_FIELDS},
            )
        }
    columns = [[getattr(r, name) for r in recipients] for name in SETTLED_FIELDS]
    with connection.cursor() as cursor:
        cursor.execute(SETTLE_SQL, [[r.pk for r in recipients], *columns, token])
        return {row[0] for row in cursor.fetchall()}


def settle(token, outcomes):
    """Record the outcomes of attempts for recipients this run owns, in a
    few statements for the whole batch: new states, attempts, events and
    webhook posts; then failure reports and finished messages."""
    if not outcomes:
        return
    now = timezone.now()
    for outcome in outcomes:
        decide(outcome, now)

    with transaction.atomic():
        owned = store_settled(token, [o.recipient for o in outcomes])
        kept = [o for o in outcomes if o.recipient.pk in owned]
        DeliveryAttempt.objects.bulk_create(o.attempt for o in outcomes if o.attempt)
        record_all([(o.message, o.recipient.state, describe(o)) for o in kept])
        webhooks.announce_all(
            [(o.message, o.recipient.state, o.recipient, str(o.reply)) for o in kept]
        )
        for o in kept:
            if o.recipient.state == Recipient.BOUNCED:
                suppress_if_hard(o.message, o.recipient, o.reply)

    bounced = {}
    for o in kept:
        if o.recipient.state == Recipient.BOUNCED:
            bounced.setdefault(o.message.pk, (o.message, []))[1].append(o.recipient)
    for message, recipients in bounced.values():
        dsn.queue_failure_report(message, recipients)
    finish_done({o.message.pk for o in outcomes})


def decide(outcome, now):
    """Set the recipient's new state from the reply (and the message's
    age); the reply becomes the final one when delivery is given up."""
    rcpt, reply = outcome.recipient, outcome.reply
    rcpt.attempts += 1
    if reply.accepted:
        rcpt.state, rcpt.delivered_at = Recipient.DELIVERED, now
    elif reply.permanent:
        rcpt.state = Recipient.BOUNCED
    elif now - outcome.message.created_at > give_up_after():
        rcpt.state = Recipient.BOUNCED
        final = f"5.4.7 Delivery time expired; last reply: {reply}"
        outcome.reply = smtp_client.Reply(550, final)
    else:
        rcpt.state = Recipient.DEFERRED
        rcpt.next_attempt_at = now + timedelta(seconds=retry_delay(rcpt.attempts))
    rcpt.last_reply = str(outcome.reply)
    rcpt.claim_token = None
    rcpt.data_sent_at = None


def give_up_after():
    return timedelta(seconds=settings.DELIVERY_GIVE_UP)


def describe(outcome):
    detail = f"to={outcome.recipient.address} reply={outcome.reply}"
    if outcome.recipient.state == Recipient.DEFERRED:
        detail += f" retry_at={outcome.recipient.next_attempt_at.isoformat()}"
    return detail


def suppress_if_hard(message, rcpt, reply):
    status = reply.text.split(" ", 1)[0]
    if suppression.is_hard_bounce(status):
        suppression.suppress(
            message.tenant_id, rcpt.address, Suppression.HARD_BOUNCE,
            f"{message.queue_id}: {reply}"[:500],
        )


def postpone(batch, reason):
    """Give what is left of the batch back without counting an attempt: it
    is tried again shortly, when the destination has room."""
    retry_at = timezone.now() + timedelta(seconds=settings.DESTINATION_RETRY)
    with transaction.atomic():
        Recipient.objects.filter(claim_token=batch.token).update(
            state=Recipient.DEFERRED, next_attempt_at=retry_at, claim_token=None
        )
        record_all(
            [(i.message, "postponed", f"{reason}; retry_at={retry_at.isoformat()}")
             for i in batch.items]
        )
    batch.items = []


def retry_delay(attempts):
    """Exponential back-off with jitter, so that retries after an outage do
    not all arrive at once."""
    base = settings.DELIVERY_FIRST_RETRY * 2 ** (attempts - 1)
    return min(base, settings.DELIVERY_MAX_BACKOFF) * random.uniform(0.8, 1.2)


def finish_done(message_ids):
    """Mark DONE those of the messages whose every recipient is final."""
    unfinished = Recipient.objects.filter(message_id=OuterRef("pk")).exclude(
        state__in=Recipient.FINAL_STATES
    )
    Message.objects.filter(pk__in=message_ids, state=Message.QUEUED).exclude(
        Exists(unfinished)
    ).update(state=Message.DONE, state_changed_at=timezone.now())
