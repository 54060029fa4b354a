"""The idle timer of a session and the check for lone CR and LF: both run
for every command or every message, so both are made cheap; these tests
hold them to what they did before."""

import asyncio
import re
import time

import pytest

from smtp_gateway.handler import has_bare_line_ending
from smtp_gateway.protocol import SubmissionSMTP
from tests.support.gateway import own_gateway  # noqa: F401 (a fixture)
from tests.support.raw_smtp import RawSMTP

# The search the counting replaced, kept here as the reference.
LONE_CR_OR_LF = re.compile(rb"\r(?!\n)|(?<!\r)\n")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"a\r\nb\r\n",
        b"a\rb\r\n",
        b"a\nb\r\n",
        b"a\r\r\n",
        b"a\r\n\n",
        b"\n\r",
        b"\r",
        b"\n",
        b"\r\n\r\n.\r\n",
        b"text\r\n\r\n.\n",
        b"end\r",
        b"\nstart\r\n",
    ],
)
def test_lone_cr_or_lf_is_found_as_the_search_found_it(raw):
    assert has_bare_line_ending(raw) is (LONE_CR_OR_LF.search(raw) is not None)


@pytest.fixture
def session():
    loop = asyncio.new_event_loop()
    session = SubmissionSMTP(object(), sessions=set(), loop=loop, timeout=300)
    closed = []
    session.close_with = closed.append
    session.closed = closed
    yield session
    loop.close()


def test_activity_moves_the_deadline_not_the_timer(session):
    session._reset_timeout()
    timer = session._timeout_handle
    first_deadline = session._idle_deadline
    time.sleep(0.01)
    session._reset_timeout()
    assert session._timeout_handle is timer
    assert session._idle_deadline > first_deadline == timer.when()


def test_a_sooner_deadline_replaces_the_timer(session):
    session._reset_timeout()
    later = session._timeout_handle
    session._reset_timeout(10)
    assert later.cancelled()
    assert session._timeout_handle.when() == session._idle_deadline


def test_a_timer_that_fires_early_waits_for_the_deadline(session):
    session._reset_timeout()
    session._idle_timer()
    assert session.closed == []
    assert session._timeout_handle.when() == session._idle_deadline

    session._idle_deadline = session.loop.time() - 1
    session._idle_timer()
    assert session.closed == ["421 4.4.2 Idle for too long, closing connection"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_session_in_use_outlives_its_first_deadline(own_gateway):
    started = own_gateway(POSTERN_SMTP_IDLE_TIMEOUT="1")
    client = RawSMTP(started.submission_host, started.submission_port, timeout=10)
    try:
        assert client.greeting.startswith("220 ")
        for _ in range(6):
            time.sleep(0.4)
            assert client.command("NOOP") == "250 2.0.0 OK"
        assert client.reply() == "421 4.4.2 Idle for too long, closing connection"
        assert client.closed_by_server()
    finally:
        client.close()
