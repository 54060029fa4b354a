"""Per-credential limits and brute-force protection, through the real gateway
and, for the counting itself, against real Redis and the in-process store."""

import uuid

import pytest

from smtp_gateway import auth_guard, rate_limits
from smtp_gateway.counters import LocalCounters, RedisCounters
from smtp_gateway.models import SecurityEvent
from tenants.models import Credential
from tests.support.gateway import own_gateway, submissions  # noqa: F401 (a fixture)
from tests.support.raw_smtp import authenticated, tls_session
from tests.support.senders import make_sender

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def sender(zone):
    return make_sender(zone)


def limit_credential(sender, **fields):
    Credential.objects.filter(username=sender.username).update(**fields)


def message(sender, size=0):
    body = f"From: <{sender.address}>\r\nSubject: Limits\r\n\r\nHello.\r\n"
    return body + "x" * size + ("\r\n" if size else "")


def send(client, sender, recipients=("a@customer.example.net",), size=0,
         mail_params=""):
    """One transaction; returns the reply that ended it."""
    reply = client.command(f"MAIL FROM:<{sender.address}>{mail_params}")
    if not reply.startswith("250"):
        return reply
    for recipient in recipients:
        reply = client.command(f"RCPT TO:<{recipient}>")
        if not reply.startswith("250"):
            return reply
    client.command("DATA")
    client.send(message(sender, size) + ".\r\n")
    return client.reply()


def test_recipients_per_message(gateway, sender):
    limit_credential(sender, max_recipients=2)
    client = authenticated(gateway, sender)
    try:
        client.command(f"MAIL FROM:<{sender.address}>")
        for name in ("a", "b"):
            assert client.command(f"RCPT TO:<{name}@customer.example.net>") == (
                "250 2.1.5 Recipient OK"
            )
        assert client.command("RCPT TO:<c@customer.example.net>") == (
            "452 4.5.3 Too many recipients (limit 2 per message)"
        )
        client.command("DATA")
        client.send(message(sender) + ".\r\n")
        assert client.reply().startswith("250 2.0.0")
    finally:
        client.close()
    assert submissions().get().recipients.count() == 2


def test_message_size_declared_and_actual(gateway, sender):
    limit_credential(sender, max_message_size=400)
    refusal = (
        "552 5.3.4 Message size exceeds the limit of 400 octets for this credential"
    )
    client = authenticated(gateway, sender)
    try:
        assert "250-SIZE 400\n" in client.command("EHLO client.example.net")
        assert send(client, sender, mail_params=" SIZE=401") == refusal
        assert send(client, sender, mail_params=" SIZE=100", size=500) == refusal
        assert send(client, sender, size=500) == refusal
        assert send(client, sender, size=100).startswith("250 2.0.0")
    finally:
        client.close()
    assert submissions().count() == 1


def test_messages_per_day_and_bytes_per_day(gateway, sender):
    limit_credential(sender, messages_per_day=2)
    client = authenticated(gateway, sender)
    try:
        assert send(client, sender).startswith("250 2.0.0")
        assert send(client, sender).startswith("250 2.0.0")
        refused = send(client, sender)
        assert refused.startswith(
            "451 4.7.1 Sending limit of 2 messages per day reached for this "
            "credential; retry in "
        )
        assert refused.endswith(" seconds")
    finally:
        client.close()
    assert submissions().count() == 2

    other = make_sender_with_limits(sender, bytes_per_day=600)
    client = authenticated(gateway, other)
    try:
        assert send(client, other, size=200).startswith("250 2.0.0")
        assert send(client, other, size=400).startswith(
            "451 4.7.1 Sending limit of 600 bytes per day reached"
        )
    finally:
        client.close()


def make_sender_with_limits(sender, **fields):
    """A second credential of the same tenant."""
    from tenants.credentials import issue_credential

    credential, secret = issue_credential(sender.tenant, "Second application")
    Credential.objects.filter(pk=credential.pk).update(**fields)
    return type(sender)(sender.tenant, sender.domain, credential.username, secret,
                        sender.key)


def test_concurrent_connections(gateway, sender):
    limit_credential(sender, max_connections=1)
    first = authenticated(gateway, sender)
    second = tls_session(gateway)
    try:
        assert second.login(sender.username, sender.secret) == (
            "454 4.7.0 Too many concurrent connections for this credential (limit 1)"
        )
        first.command("QUIT")
        first.close()

        def logged_in():
            reply = second.login(sender.username, sender.secret)
            return reply.startswith("235")

        assert any(logged_in() for _ in range(100))
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("store", ["redis", "local"])
def test_counting_is_shared_and_takes_back_a_refused_message(gateway, store):
    def counters():
        if store == "redis":
            return RedisCounters(gateway.env["CELERY_BROKER_URL"])
        return shared_local

    shared_local = LocalCounters()
    credential_id = uuid.uuid4().int % 10**9
    limits = (
        rate_limits.Limit("messages", rate_limits.MINUTE, 3),
        rate_limits.Limit("bytes", rate_limits.HOUR, 1000),
    )
    # Two stores on one Redis stand for two gateway processes.
    first, second = counters(), counters()
    assert rate_limits.count_message(first, credential_id, limits, 100) is None
    assert rate_limits.count_message(second, credential_id, limits, 100) is None
    full, retry_after = rate_limits.count_message(first, credential_id, limits, 900)
    assert full.what == "bytes" and 0 < retry_after <= 3601
    # The refused 900 bytes were taken back out: 800 more still fit.
    assert rate_limits.full_limit(second, credential_id, limits, 800) is None
    assert rate_limits.count_message(second, credential_id, limits, 10) is None
    full, _ = rate_limits.count_message(first, credential_id, limits, 10)
    assert full.name == "3 messages per minute"


def test_failed_logins_are_slowed_then_blocked_and_recorded(gateway, sender):
    """The test gateway blocks after 6 failures (see tests/support/gateway.py);
    a source address of its own keeps the block away from other tests."""
    client = tls_session(gateway, source_address=("127.0.0.77", 0))
    try:
        for _ in range(6):
            assert client.login(sender.username, "wrong-secret") == (
                "535 5.7.8 Authentication credentials invalid"
            )
        blocked = client.login(sender.username, sender.secret)
        assert blocked.startswith("454 4.7.0 Too many failed logins; try again in ")
    finally:
        client.close()

    # The address is blocked for every user; the username only for addresses
    # that failed (see the next test).
    someone_else = make_sender_with_limits(sender)
    assert authenticated_or_reply(gateway, someone_else, ("127.0.0.77", 0)).startswith(
        "454 4.7.0 Too many failed logins"
    )
    assert authenticated_or_reply(gateway, sender, ("127.0.0.78", 0)).startswith(
        "235"
    )

    events = SecurityEvent.objects.filter(client_address="127.0.0.77")
    assert events.filter(kind=SecurityEvent.AUTH_FAILED).count() == 6
    assert set(events.filter(kind=SecurityEvent.AUTH_BLOCKED).values_list(
        "detail", flat=True)) == {
            "ip blocked for 120 seconds",
            "user blocked for 120 seconds for addresses that failed",
    }
    assert all(e.username == sender.username for e in events)


def test_failures_from_other_addresses_do_not_lock_out_the_username(gateway, sender):
    """Twelve wrong passwords for one username, each from another address,
    must not keep the application out: it logs in from an address with no
    failures. The addresses that guessed stay refused for that username."""
    guessers = [f"127.0.0.{n}" for n in range(10, 22)]
    for address in guessers:
        assert authenticated_or_reply(
            gateway, sender, (address, 0), secret="wrong-secret"
        ) == "535 5.7.8 Authentication credentials invalid"

    assert authenticated_or_reply(gateway, sender, ("127.0.0.40", 0)).startswith(
        "235 2.7.0"
    )
    # A guesser is refused even with the right secret, as one that fails
    # once from a fresh address is from then on.
    assert authenticated_or_reply(gateway, sender, (guessers[0], 0)).startswith(
        "454 4.7.0 Too many failed logins; try again in "
    )
    assert authenticated_or_reply(
        gateway, sender, ("127.0.0.41", 0), secret="wrong-secret"
    ) == "535 5.7.8 Authentication credentials invalid"
    assert authenticated_or_reply(gateway, sender, ("127.0.0.41", 0)).startswith(
        "454 4.7.0 Too many failed logins"
    )


def authenticated_or_reply(gateway, sender, source, secret=None):
    client = tls_session(gateway, source_address=source)
    try:
        return client.login(sender.username, secret or sender.secret)
    finally:
        client.close()


def test_guard_policy_counts_per_address_and_username():
    counters = LocalCounters()
    policy = auth_guard.GuardPolicy(slow_after=1, block_after=3, max_delay=2)
    delays = [auth_guard.record_failure(counters, policy, "192.0.2.1", "u")[0]
              for _ in range(2)]
    assert delays == [0.0, 1.0]
    assert auth_guard.blocked_for(counters, "192.0.2.1", "u") == 0
    _, blocked = auth_guard.record_failure(counters, policy, "192.0.2.1", "u")
    assert blocked == ["ip:192.0.2.1", "user:u"]
    assert auth_guard.blocked_for(counters, "192.0.2.1", "other") > 0
    # A blocked username is refused only to addresses that have failed.
    assert auth_guard.blocked_for(counters, "192.0.2.9", "U") == 0
    auth_guard.record_failure(counters, policy, "192.0.2.9", "someone")
    assert auth_guard.blocked_for(counters, "192.0.2.9", "U") > 0
    assert auth_guard.blocked_for(counters, "192.0.2.9", "other") == 0


def test_intake_goes_on_when_the_counters_are_unreachable(own_gateway, sender):
    """Redis down must not stop intake, as a broker outage does not: limits
    and brute-force counting are skipped, and the gateway says so in its log."""
    from tests.support.processes import free_port

    limit_credential(sender, messages_per_day=1)
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    started = own_gateway(POSTERN_COUNTERS_REDIS_URL=unreachable)
    client = authenticated(started, sender)
    try:
        assert send(client, sender).startswith("250 2.0.0")
        assert send(client, sender).startswith("250 2.0.0")
    finally:
        client.close()
    assert submissions().count() == 2
    assert "event=counters_unavailable" in started.process.output()


def test_security_events_are_listed_for_staff_and_read_only(admin_client, client,
                                                             django_user_model):
    SecurityEvent.objects.create(kind=SecurityEvent.AUTH_BLOCKED,
                                 client_address="192.0.2.9", username="pst_guessed",
                                 detail="ip blocked for 900 seconds")
    page = admin_client.get("/admin/smtp_gateway/securityevent/")
    assert page.status_code == 200
    assert b"192.0.2.9" in page.content and b"pst_guessed" in page.content
    assert admin_client.get("/admin/smtp_gateway/securityevent/add/").status_code == 403

    django_user_model.objects.create_user("tenant-admin", password="pw-tenant-1")
    client.login(username="tenant-admin", password="pw-tenant-1")
    assert client.get("/admin/smtp_gateway/securityevent/").status_code == 302
