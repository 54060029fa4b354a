"""How the gateway's handler uses the sending-limit counters around a
message: not at all without limits; with limits, counted before the message
is stored, taken back out when it is not stored, and nothing stored when a
limit is reached. The handler is called directly, with the store replaced."""

import asyncio
import time
from types import SimpleNamespace

import pytest

from smtp_gateway import handler as gateway_handler
from smtp_gateway import rate_limits
from smtp_gateway.auth_guard import GuardPolicy
from smtp_gateway.counters import LocalCounters
from smtp_gateway.handler import GatewayPolicy, Identity, SubmissionHandler

ONE_PER_MINUTE = (rate_limits.Limit("messages", rate_limits.MINUTE, 1),)
RAW = b"From: <a@shop.example.test>\r\n\r\nHello.\r\n"


class RecordingCounters(LocalCounters):
    def __init__(self):
        super().__init__()
        self.calls = []

    def get(self, keys):
        self.calls.append("get")
        return super().get(keys)

    def add(self, amounts):
        self.calls.append("add")
        return super().add(amounts)


def identity(limits):
    return Identity(
        credential_id=7,
        tenant_id=1,
        username="pst_test",
        domains=frozenset({"shop.example.test"}),
        identities=(),
        max_message_size=10_000,
        max_recipients=10,
        max_connections=5,
        limits=limits,
    )


@pytest.fixture
def counters():
    return RecordingCounters()


@pytest.fixture
def handler(counters):
    policy = GatewayPolicy(
        max_message_size=10_000,
        max_recipients=10,
        max_connections=5,
        default_limits={},
        guard=GuardPolicy(),
    )
    handler = SubmissionHandler(policy, counters, workers=1)
    yield handler
    handler.pool.shutdown(wait=True)


@pytest.fixture
def stored(monkeypatch):
    """The queue ids handed out by the replaced store, in order."""
    queue_ids = []

    def store(identity, envelope, raw, headers, peer_ip):
        queue_ids.append(f"Q{len(queue_ids) + 1}")
        return queue_ids[-1]

    monkeypatch.setattr(gateway_handler, "_store", store)
    return queue_ids


def count_and_store(handler, limits):
    envelope = SimpleNamespace(rcpt_tos=["b@customer.example.net"])
    return handler._count_and_store(
        "session=test", identity(limits), envelope, RAW, None, "127.0.0.1"
    )


def counted(counters, limits):
    (total,) = counters.get([rate_limits._key(7, limits[0], time.time())])
    return total


def test_without_limits_the_counters_are_left_alone(handler, counters, stored):
    server = SimpleNamespace(who="session=test peer=127.0.0.1")
    session = SimpleNamespace(auth_data=identity(()))
    reply = asyncio.run(
        handler.handle_MAIL(
            server, session, SimpleNamespace(), "a@shop.example.test", {}
        )
    )
    assert reply == "250 2.1.0 Sender OK"
    assert count_and_store(handler, ()) == (None, "Q1")
    assert counters.calls == []


def test_a_limit_is_checked_at_mail(handler, counters, stored):
    server = SimpleNamespace(who="session=test peer=127.0.0.1")
    session = SimpleNamespace(auth_data=identity(ONE_PER_MINUTE))
    assert count_and_store(handler, ONE_PER_MINUTE) == (None, "Q1")
    reply = asyncio.run(
        handler.handle_MAIL(
            server, session, SimpleNamespace(), "a@shop.example.test", {}
        )
    )
    assert reply.startswith(
        "451 4.7.1 Sending limit of 1 messages per minute reached for this "
        "credential; retry in "
    )


def test_a_message_over_the_limit_is_not_stored(handler, counters, stored):
    assert count_and_store(handler, ONE_PER_MINUTE) == (None, "Q1")
    full, queue_id = count_and_store(handler, ONE_PER_MINUTE)
    assert full[0] == ONE_PER_MINUTE[0] and queue_id is None
    assert stored == ["Q1"]
    assert counted(counters, ONE_PER_MINUTE) == 1


def test_a_message_that_is_not_stored_is_taken_back_out(handler, counters, monkeypatch):
    def broken_store(*args):
        raise RuntimeError("database gone")

    monkeypatch.setattr(gateway_handler, "_store", broken_store)
    with pytest.raises(RuntimeError):
        count_and_store(handler, ONE_PER_MINUTE)
    assert counters.calls == ["add", "add"]
    assert counted(counters, ONE_PER_MINUTE) == 0
