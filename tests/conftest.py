import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.dns_server import DNSServer

# Fixtures shared by many modules are registered once here, so that a
# session-scoped one (the browser) really exists once per session.
pytest_plugins = ["tests.support.browser"]

from tests.support.mx import MXServer
from tests.support.processes import free_port, start_gateway, start_worker


def redis_db_index():
    """One Redis database per pytest-xdist worker, counted from
    POSTERN_TEST_REDIS_DB (default 1), so that parallel runs share nothing."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    base = int(os.environ.get("POSTERN_TEST_REDIS_DB", "1"))
    return base + int(worker.removeprefix("gw") or 0)


@pytest.fixture(scope="session")
def run_dir():
    with tempfile.TemporaryDirectory(prefix="postern-tests-") as path:
        yield Path(path)


@pytest.fixture(scope="session")
def dns_server():
    from django.conf import settings

    server = DNSServer().start()
    settings.DNS_RESOLVER = server.address
    settings.DNS_TIMEOUT = 2
    yield server
    server.stop()


@pytest.fixture
def zone(dns_server):
    """The test DNS zone, emptied after each test."""
    yield dns_server.zone
    with dns_server.zone.lock:
        dns_server.zone.records.clear()
        dns_server.zone.silent.clear()


@pytest.fixture(scope="session")
def delivery_port():
    """The port every test MX listens on; the worker delivers to it."""
    return free_port()


@pytest.fixture(scope="session")
def gateway_tls(run_dir):
    from smtp_gateway.management.commands.make_dev_certificate import write_self_signed

    cert, key = run_dir / "gateway-cert.pem", run_dir / "gateway-key.pem"
    write_self_signed(cert, key)
    return cert, key


@pytest.fixture
def mx(delivery_port):
    """The recipients' MX: a real SMTP server on 127.0.0.1, without STARTTLS."""
    server = MXServer("127.0.0.1", delivery_port).start()
    yield server
    server.stop()


@dataclass
class Stack:
    env: dict
    submission_host: str
    submission_port: int
    logs: Path
    gateway: object
    worker: object


@pytest.fixture(scope="session")
def stack(django_db_setup, django_db_blocker, dns_server, delivery_port, gateway_tls,
          run_dir):
    """The gateway and a Celery worker, each in its own process, on the test
    database, Redis, the test DNS server and the test MX port."""
    import redis
    from django.db import connection

    db = connection.settings_dict
    redis_url = f"{os.environ['POSTERN_REDIS_URL']}/{redis_db_index()}"
    redis.Redis.from_url(redis_url).flushdb()
    submission_port = free_port()
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="relay.settings",
        DATABASE_URL=(
            f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        ),
        CELERY_BROKER_URL=redis_url,
        POSTERN_DNS_RESOLVER=dns_server.address,
        POSTERN_DNS_TIMEOUT="2",
        POSTERN_DELIVERY_PORT=str(delivery_port),
        POSTERN_SUBMISSION_LISTEN=f"127.0.0.1:{submission_port}",
        POSTERN_TLS_CERT=str(gateway_tls[0]),
        POSTERN_TLS_KEY=str(gateway_tls[1]),
        POSTERN_SWEEP_INTERVAL="2",
        POSTERN_STALE_AFTER="10",
        POSTERN_DELIVERY_FIRST_RETRY="2",
        POSTERN_DELIVERY_TIMEOUT="10",
        POSTERN_VAR_DIR=str(run_dir),
        # A queue of the stack's own, so that its worker (alive for the whole
        # session) never takes up mail from gateways that other tests start.
        POSTERN_QUEUE="postern-stack",
        # Many tests log in wrongly from 127.0.0.1 on purpose; the AUTH guard
        # must not block them. It is tested on a gateway of its own.
        POSTERN_AUTH_SLOW_AFTER="100000",
        POSTERN_AUTH_BLOCK_AFTER="100000",
    )
    env.pop("POSTERN_TRANSPORT_OVERRIDES", None)
    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)
    gateway = start_gateway(env, logs)
    worker = start_worker(env, logs)
    yield Stack(env, "127.0.0.1", submission_port, logs, gateway, worker)
    worker.stop()
    gateway.stop()


@pytest.fixture(scope="session")
def gateway(django_db_setup, django_db_blocker, dns_server, gateway_tls, run_dir):
    """A gateway process alone, with both listeners and the short limits the
    gateway tests exercise; see tests/support/gateway.py."""
    from django.db import connection

    from tests.support.gateway import forget_counters, gateway_env, start_test_gateway

    redis_url = f"{os.environ['POSTERN_REDIS_URL']}/{redis_db_index()}"
    forget_counters(redis_url)
    env = gateway_env(connection.settings_dict, redis_url, dns_server, gateway_tls,
                      run_dir)
    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)
    started = start_test_gateway(env, logs)
    yield started
    started.process.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure in a test that used the stack, show the processes' logs."""
    report = yield
    stack = item.funcargs.get("stack") if hasattr(item, "funcargs") else None
    if report.failed and stack is not None:
        for process in (stack.gateway, stack.worker):
            tail = process.output()[-6000:]
            report.sections.append((f"{process.name} log (tail)", tail))
    gateway = item.funcargs.get("gateway") if hasattr(item, "funcargs") else None
    if report.failed and gateway is not None:
        tail = gateway.process.output()[-6000:]
        report.sections.append(("gateway-tests log (tail)", tail))
    return report


def pytest_collection_modifyitems(config, items):
    """Browser tests run last: Playwright's sync API keeps an event loop on
    the main thread for as long as the browser lives, and later tests that
    run asyncio code of their own would find it in their way."""
    items.sort(key=lambda item: "browser" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session", autouse=True)
def flush_survives_deadlocks():
    """pytest-django empties the database after each transactional test with
    one TRUNCATE of every table. The gateway and worker processes keep
    working meanwhile, and PostgreSQL may end the TRUNCATE as the loser of a
    deadlock with one of their transactions; trying again then succeeds."""
    from django.core.management.commands import flush
    from django.db import OperationalError

    original = flush.Command.handle

    def handle(self, *args, **options):
        for attempt in range(5):
            try:
                return original(self, *args, **options)
            except Exception as exc:  # flush wraps the error in CommandError
                if attempt == 4 or not isinstance(exc.__cause__, OperationalError):
                    raise

    flush.Command.handle = handle
    yield
    flush.Command.handle = original
