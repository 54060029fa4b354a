"""Postern's own processes killed under load: nothing the client saw 250 for
is lost or sent twice, and nothing the client did not finish is sent.

The stack runs on a PostgreSQL and a Redis of its own (tests/support/
fault_stack.py), so killing things here touches nothing else.
"""

import asyncio

import pytest

from tests.support.fault_stack import (
    arrivals_of,
    assert_nothing_lost_or_doubled,
    fault_stack,
)
from tests.support.services import wait_or_fail
from tests.support.submission import (
    ACCEPTED,
    BROKEN_AFTER_DOT,
    BROKEN_BEFORE_DOT,
    numbered_message,
)

pytestmark = pytest.mark.slow

# Generous: the machine may be busy, and recovery waits for POSTERN_STALE_AFTER.
ARRIVAL_DEADLINE = 90


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with fault_stack(tmp_path_factory.mktemp("faults-processes")) as stack:
        yield stack


@pytest.fixture(autouse=True)
def fresh_hooks(stack):
    yield
    stack.sink.on_rcpt = stack.sink.on_accept = None
    if stack.worker.popen.poll() is not None:
        stack.start_worker()
    if stack.gateway.popen.poll() is not None:
        stack.start_gateway()


def test_worker_killed_repeatedly_mid_pipeline_loses_nothing(stack):
    # A steady load well below what a busy machine can relay, so that what
    # is measured is recovery, not a backlog.
    domain = stack.add_recipient_domain("worker-kill.example.net")
    load = stack.load("worker-kill", domain, sessions=2, interval=0.2).start()
    try:
        for _ in range(3):
            assert load.wait_for_accepted(10, timeout=60), stack.logs_tail()
            stack.kill(stack.worker)
            assert load.wait_for_accepted(5, timeout=60), stack.logs_tail()
            stack.start_worker()
        assert load.wait_for_accepted(10, timeout=60), stack.logs_tail()
    finally:
        load.stop()

    accepted = load.with_outcome(ACCEPTED)
    print(f"worker kills: accepted={len(accepted)} kills=3")
    missing, doubled = arrivals_of(stack, accepted, ARRIVAL_DEADLINE)
    assert_nothing_lost_or_doubled(stack, missing, doubled)


def test_worker_killed_mid_delivery_is_resumed(stack):
    """Killed after claiming the recipient and before sending the data: the
    claim lease runs out and the message goes on."""
    seq = "mid-delivery-1"
    domain = stack.add_recipient_domain("mid-delivery.example.net")
    stack.sink.on_rcpt = lambda address: stack.kill_now(stack.worker)
    assert asyncio.run(send_one(stack, seq, domain))
    assert stack.wait_for_exit(stack.worker)
    stack.sink.on_rcpt = None
    stack.start_worker()

    missing = stack.sink.wait_for({seq}, ARRIVAL_DEADLINE)
    assert not missing, stack.recipient_states([seq])
    assert stack.sink.wait_for_count(seq, 2, timeout=5) == 1


def test_gateway_killed_mid_data_keeps_exactly_what_it_acknowledged(stack):
    domain = stack.add_recipient_domain("gateway-kill.example.net")
    load = stack.load("gateway-kill", domain, sessions=3, interval=0.2).start()
    paused = []
    try:
        for round_number in range(2):
            assert load.wait_for_accepted(10, timeout=60), stack.logs_tail()
            seq = f"gateway-paused-{round_number}"
            # The gateway died before the client wrote the final dot; the
            # client only learns that after writing it.
            outcome = asyncio.run(send_paused_and_kill_gateway(stack, seq, domain))
            assert outcome in (BROKEN_BEFORE_DOT, BROKEN_AFTER_DOT)
            paused.append(seq)
            stack.start_gateway()
        assert load.wait_for_accepted(10, timeout=60), stack.logs_tail()
    finally:
        load.stop()

    accepted = load.with_outcome(ACCEPTED)
    unfinished = load.with_outcome(BROKEN_BEFORE_DOT) | set(paused)
    missing, doubled = arrivals_of(stack, accepted, ARRIVAL_DEADLINE)

    # A message whose final dot never left the client was never complete:
    # the relay must not hold it, let alone send it.
    assert not stack.stored(unfinished)
    arrivals = stack.sink.snapshot()
    assert not [seq for seq in unfinished if arrivals[seq]]

    # After the dot and before the reply, either is right (RFC 1047).
    unknown = load.with_outcome(BROKEN_AFTER_DOT)
    print(f"gateway kills: accepted={len(accepted)} unfinished={len(unfinished)} "
          f"dot_without_reply={len(unknown)} of_which_delivered="
          f"{sum(1 for seq in unknown if arrivals[seq])}")
    assert_nothing_lost_or_doubled(stack, missing, doubled)


def test_worker_killed_after_remote_250_is_counted(stack):
    """The known window (RFC 1047): the remote server has the message, the
    worker dies before recording it; a later retry sends it again. The test
    reports how many duplicates arrive; it does not require zero."""
    seq = "after-250-1"
    domain = stack.add_recipient_domain("after-250.example.net")
    stack.sink.on_accept = lambda arrived: (
        stack.kill_now(stack.worker) if arrived == seq else None
    )
    assert asyncio.run(send_one(stack, seq, domain))
    assert not stack.sink.wait_for({seq}, ARRIVAL_DEADLINE)
    assert stack.wait_for_exit(stack.worker)
    stack.sink.on_accept = None
    stack.start_worker()

    # Once the claim lease has run out the relay decides; then a retry, if
    # it makes one, comes within a sweep or two.
    wait_or_fail(lambda: stack.recipient_states([seq])[seq] != ["sending"],
                 ARRIVAL_DEADLINE, "the recipient is still claimed by the dead run")
    copies = stack.sink.wait_for_count(seq, 2, timeout=5)
    state = stack.recipient_states([seq]).get(seq)
    print(f"after-250 kill: copies_at_sink={copies} duplicates={copies - 1} "
          f"recipient_state={state}")
    assert copies >= 1
    # Whatever the relay decided, the sender can see it.
    assert state in (["delivered"], ["unconfirmed"])


async def send_one(stack, seq, domain):
    session = await stack.session()
    data = numbered_message(stack.sender_address, f"rcpt@{domain}", seq)
    rcpts = [f"rcpt@{domain}"]
    outcome, code, text = await session.send(stack.sender_address, rcpts, data)
    await session.quit()
    return outcome == ACCEPTED


async def send_paused_and_kill_gateway(stack, seq, domain):
    """Half of a message's data, then SIGKILL to the gateway, then the rest."""
    session = await stack.session()
    data = numbered_message(stack.sender_address, f"rcpt@{domain}", seq, size=64 * 1024)

    async def kill_gateway():
        stack.kill(stack.gateway)

    outcome, code, text = await session.send(
        stack.sender_address, [f"rcpt@{domain}"], data, pause_in_data=kill_gateway,
    )
    session.close()
    return outcome
