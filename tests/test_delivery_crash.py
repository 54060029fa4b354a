"""A delivery run killed mid-session: the recipient is never sent the message
twice. The run is a real process, killed with SIGKILL while the remote server
holds its reply."""

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from relay import delivery, sweeper
from relay.models import Message, Recipient
from tests.support.delivery_fixtures import mx_hosts, outbound  # noqa: F401
from tests.support.outbound import make_tenant, queue_message, serve_domain
from tests.support.processes import ROOT
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

DOMAIN = "customer.example.net"


def start_delivery_run(message, dns_server, delivery_port):
    db = connection.settings_dict
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="relay.settings",
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        CELERY_BROKER_URL="memory://",
        POSTERN_DNS_RESOLVER=dns_server.address,
        POSTERN_DELIVERY_PORT=str(delivery_port),
        POSTERN_LOG_LEVEL="WARNING",
    )
    env.pop("POSTERN_TRANSPORT_OVERRIDES", None)
    code = (
        "import django; django.setup(); from relay import delivery; "
        f"delivery.deliver_to_domain({message.pk}, {DOMAIN!r})"
    )
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)


def kill_run_at(stage, server, message, dns_server, delivery_port):
    """Start a run, wait until the server holds it at stage, kill it, then let
    the server answer (to nobody)."""
    server.behaviour.hold = threading.Event()
    server.behaviour.hold_stage = stage
    run = start_delivery_run(message, dns_server, delivery_port)
    try:
        assert server.behaviour.arrived.wait(30), "the run never reached the server"
        run.send_signal(signal.SIGKILL)
        run.wait(10)
    finally:
        if run.poll() is None:
            run.kill()
    server.behaviour.hold.set()
    server.behaviour.hold = None
    server.behaviour.hold_stage = ""


def sweep_after_the_lease():
    """What the sweeper does once the dead run's lease has run out."""
    sweeper.expire_claims(claimed_before=timezone.now() + timedelta(seconds=1))


@pytest.fixture
def server(zone, outbound, mx_hosts):
    serve_domain(zone, DOMAIN, (10, f"mx1.{DOMAIN}", "127.0.0.2"))
    return mx_hosts("127.0.0.2")


def test_run_killed_after_the_end_of_data_never_sends_again(
    server, dns_server, delivery_port
):
    message = queue_message(make_tenant(), [f"alice@{DOMAIN}"])

    kill_run_at("data", server, message, dns_server, delivery_port)

    # The server got the message and said 250 to a dead socket.
    assert len(server.wait_for(1)) == 1
    rcpt = message.recipients.get()
    assert rcpt.state == Recipient.SENDING
    assert rcpt.data_sent_at is not None

    sweep_after_the_lease()
    delivery.deliver_to_domain(message.pk, DOMAIN)

    rcpt = message.recipients.get()
    assert rcpt.state == Recipient.UNCONFIRMED
    assert message.events.filter(kind="unconfirmed").exists()
    assert Message.objects.get(pk=message.pk).state == Message.DONE
    assert len(server.received) == 1


def test_run_killed_before_data_is_retried_and_delivered_once(
    server, dns_server, delivery_port
):
    message = queue_message(make_tenant(), [f"bob@{DOMAIN}"])

    kill_run_at("rcpt", server, message, dns_server, delivery_port)

    rcpt = message.recipients.get()
    assert (rcpt.state, rcpt.data_sent_at) == (Recipient.SENDING, None)
    # Before the lease runs out, nobody else may take it.
    delivery.deliver_to_domain(message.pk, DOMAIN)
    assert server.received == []

    sweep_after_the_lease()
    delivery.deliver_to_domain(message.pk, DOMAIN)

    assert message.recipients.get().state == Recipient.DELIVERED
    assert server.recipients == [f"bob@{DOMAIN}"]


def test_two_runs_racing_for_a_recipient_claim_it_once(server):
    """The second run's claim waits on the first's row lock; once the first
    commits, the second must see the recipient taken."""
    tenant = make_tenant()
    queue_message(tenant, [f"carol@{DOMAIN}"])
    first_claimed, release = threading.Event(), threading.Event()
    claims = {}

    def first_run():
        try:
            with transaction.atomic():
                claims["first"] = delivery.claim_batch(DOMAIN, tenant.pk)
                first_claimed.set()
                release.wait(20)
        finally:
            connection.close()

    def second_run():
        try:
            first_claimed.wait(20)
            claims["second"] = delivery.claim_batch(DOMAIN, tenant.pk)
        finally:
            connection.close()

    runs = [threading.Thread(target=first_run), threading.Thread(target=second_run)]
    for run in runs:
        run.start()
    assert wait_until(lambda: waiting_for_locks() > 0), "the second run never waited"
    release.set()
    for run in runs:
        run.join(20)

    [item] = claims["first"].items
    assert [r.address for r in item.recipients] == [f"carol@{DOMAIN}"]
    assert claims["second"] is None


def waiting_for_locks():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE NOT l.granted AND a.datname = current_database()"
        )
        return cursor.fetchone()[0]



def run_in_thread(message):
    """A delivery run in this process, in a thread of its own (started)."""

    def run():
        try:
            delivery.deliver_to_domain(message.pk, DOMAIN)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_run_whose_claim_was_taken_back_sends_nothing(server):
    """A run that outlived its lease (a very slow server) finds at the end of
    data that the sweeper gave its recipients back: it drops the connection
    instead of sending, and the next run delivers once."""
    message = queue_message(make_tenant(), [f"dave@{DOMAIN}"])
    server.behaviour.hold = threading.Event()
    server.behaviour.hold_stage = "rcpt"

    run = run_in_thread(message)
    assert server.behaviour.arrived.wait(30), "the run never reached the server"
    sweep_after_the_lease()
    server.behaviour.hold.set()
    run.join(30)

    assert server.received == []
    assert message.recipients.get().state == Recipient.DEFERRED
    server.behaviour.hold, server.behaviour.hold_stage = None, ""
    delivery.deliver_to_domain(message.pk, DOMAIN)
    assert message.recipients.get().state == Recipient.DELIVERED
    assert len(server.received) == 1


def test_an_internal_error_defers_the_recipients_instead_of_leaving_them_claimed(
    server, monkeypatch
):
    message = queue_message(make_tenant(), [f"erin@{DOMAIN}"])

    def broken(*args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(delivery, "envelope_options", broken)
    with pytest.raises(RuntimeError):
        delivery.deliver_to_domain(message.pk, DOMAIN)

    rcpt = message.recipients.get()
    assert rcpt.state == Recipient.DEFERRED
    assert rcpt.last_reply == "451 4.3.0 Internal error while delivering"
    assert rcpt.claim_token is None and rcpt.attempts == 1


def test_a_long_transaction_keeps_its_claim(server, outbound):
    """The sweeper runs while a slow server takes longer than the claim lease
    over the end of data: the run's claim was renewed meanwhile, so the
    recipient is not taken back, and it ends delivered, once."""
    outbound.DELIVERY_CLAIM_LEASE = 1.5
    server.behaviour.slow_seconds = 3
    message = queue_message(make_tenant(), [f"fred@{DOMAIN}"])

    run = run_in_thread(message)
    assert server.behaviour.arrived.wait(30), "the run never reached the server"
    time.sleep(2)
    sweeper.expire_claims(claimed_before=timezone.now() - timedelta(seconds=1.5))
    run.join(30)

    assert message.recipients.get().state == Recipient.DELIVERED
    assert len(server.received) == 1
