"""A gateway process of its own for the gateway tests: both listeners, short
limits, and settings that a test may change, without a worker."""

import os
import signal
import sys
from dataclasses import dataclass, field

import pytest

from tests.support.processes import Process, free_port, wait_for_port


@dataclass
class Gateway:
    env: dict = field(repr=False)
    submission_host: str
    submission_port: int
    submissions_port: int
    process: Process

    @property
    def implicit(self):
        """The same gateway seen through its implicit-TLS listener."""
        return _Endpoint(self.submission_host, self.submissions_port)


@dataclass
class _Endpoint:
    submission_host: str
    submission_port: int


def gateway_env(database, redis_url, dns_server, tls, run_dir, **overrides):
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="relay.settings",
        DATABASE_URL=(
            f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}"
            f"/{database['NAME']}"
        ),
        CELERY_BROKER_URL=redis_url,
        POSTERN_DNS_RESOLVER=dns_server.address,
        POSTERN_TLS_CERT=str(tls[0]),
        POSTERN_TLS_KEY=str(tls[1]),
        POSTERN_VAR_DIR=str(run_dir),
        POSTERN_AUTH_SLOW_AFTER="3",
        POSTERN_AUTH_BLOCK_AFTER="6",
        POSTERN_AUTH_BLOCK_SECONDS="120",
        POSTERN_AUTH_MAX_DELAY="1",
        POSTERN_SHUTDOWN_GRACE="20",
    )
    env.pop("POSTERN_TRANSPORT_OVERRIDES", None)
    env.update(overrides)
    return env


def forget_counters(redis_url):
    """Drop rate and AUTH-failure counters left by an earlier run (a block
    lasts longer than a test run)."""
    import redis

    from smtp_gateway.counters import KEY_PREFIX

    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{KEY_PREFIX}*"):
        client.delete(key)


def start_test_gateway(env, log_dir, name="gateway-tests"):
    """Both listeners on free ports, unless env sets POSTERN_SUBMISSIONS_LISTEN
    to "" to leave the implicit-TLS one off."""
    host = "127.0.0.1"
    submission_port = free_port()
    implicit = env.get("POSTERN_SUBMISSIONS_LISTEN") != ""
    submissions_port = free_port() if implicit else None
    env = dict(
        env,
        POSTERN_SUBMISSION_LISTEN=f"{host}:{submission_port}",
        POSTERN_SUBMISSIONS_LISTEN=f"{host}:{submissions_port}" if implicit else "",
    )
    process = Process(name, [sys.executable, "manage.py", "run_gateway"], env,
                      log_dir)
    wait_for_port(host, submission_port, process=process.popen)
    if implicit:
        wait_for_port(host, submissions_port, process=process.popen)
    return Gateway(env, host, submission_port, submissions_port, process)


@pytest.fixture
def own_gateway(gateway, run_dir, request):
    """Start a gateway of this test's own with extra settings; stopped after."""
    started = []

    def start(**overrides):
        name = f"gateway-{request.node.name[:40]}-{len(started)}"
        process = start_test_gateway(
            dict(gateway.env, **overrides), run_dir / "logs", name=name
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.process.stop(sig=signal.SIGKILL)


def submissions():
    """Messages that clients submitted: without the delivery reports the
    relay queues itself (those have no credential), which a worker of the
    shared stack may create while a gateway test runs."""
    from relay.models import Message

    return Message.objects.exclude(credential=None)
