"""Fixtures for the delivery tests, imported by the tests/test_delivery_*
modules."""

import pytest

from relay import session_cache
from tests.support.remote_mx import RemoteMX


@pytest.fixture
def outbound(settings, dns_server, delivery_port):
    """Delivery settings pointing at the test DNS server and the test MX port,
    with no limit in the way unless a test sets one. Tasks queued meanwhile
    run at once in this process instead of going to a broker."""
    from relay.celery import app

    eager = app.conf.task_always_eager
    app.conf.task_always_eager = True
    settings.DELIVERY_PORT = delivery_port
    settings.DELIVERY_TIMEOUT = 10
    settings.DELIVERY_DATA_TIMEOUT = 10
    settings.TRANSPORT_OVERRIDES = {}
    settings.RETURN_PATH_DOMAIN = ""
    settings.DESTINATION_MAX_CONNECTIONS = 5
    settings.DESTINATION_MESSAGES_PER_MINUTE = 0
    settings.DELIVERY_CA_FILE = ""
    settings.MTA_STS_CA_FILE = ""
    # Each call delivers over a session of its own unless a test keeps them.
    settings.DELIVERY_SESSION_IDLE = 0
    yield settings
    session_cache.close_idle()
    app.conf.task_always_eager = eager


@pytest.fixture
def mx_hosts(delivery_port):
    """Start test MX hosts: mx_hosts("127.0.0.2", tls_context=...,
    pipelining=False)."""
    started = []

    def start(address, tls_context=None, smtputf8=True, pipelining=True):
        server = RemoteMX(
            address, delivery_port, tls_context, smtputf8, pipelining
        ).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
