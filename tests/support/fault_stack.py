"""A whole relay on private servers, for tests that break parts of it:
PostgreSQL and Redis of its own, the test DNS server, the sink as the
recipients' MX, the gateway and a worker as separate processes."""

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


from tests.support.dns_server import DNSServer
from tests.support.processes import ROOT, free_port, start_gateway, start_worker
from tests.support.services import PrivatePostgres, PrivateRedis
from tests.support.sink import Sink
from tests.support.submission import Session, SteadyLoad

RECIPIENT_DOMAIN = "customer.example.net"


def relay_env(postgres, redis, dns, sink_port, run_dir, **overrides):
    """The environment of every Postern process of the stack. Recovery runs
    on a short clock so that the tests see it happen in seconds."""
    from smtp_gateway.management.commands.make_dev_certificate import (
        write_self_signed,
    )

    cert, key = run_dir / "gateway-cert.pem", run_dir / "gateway-key.pem"
    if not cert.exists():
        write_self_signed(cert, key)
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="relay.settings",
        POSTERN_SECRET_KEY="fault-tests-secret-key",
        POSTERN_MASTER_KEY="fault-tests-master-key",
        DATABASE_URL=postgres.url,
        CELERY_BROKER_URL=redis.url,
        POSTERN_DNS_RESOLVER=dns.address,
        POSTERN_DNS_TIMEOUT="2",
        POSTERN_DELIVERY_PORT=str(sink_port),
        POSTERN_SUBMISSION_LISTEN=f"127.0.0.1:{free_port()}",
        POSTERN_TLS_CERT=str(cert),
        POSTERN_TLS_KEY=str(key),
        POSTERN_SWEEP_INTERVAL="1",
        POSTERN_STALE_AFTER="5",
        POSTERN_DELIVERY_FIRST_RETRY="1",
        POSTERN_DELIVERY_MAX_BACKOFF="3",
        POSTERN_DELIVERY_TIMEOUT="10",
        POSTERN_DELIVERY_DATA_TIMEOUT="10",
        # Longer than a live run holds a claim with the timeouts above.
        POSTERN_DELIVERY_CLAIM_LEASE="25",
        POSTERN_DESTINATION_SLOT_LEASE="25",
        POSTERN_VAR_DIR=str(run_dir),
        POSTERN_LOG_LEVEL="INFO",
    )
    env.pop("POSTERN_TRANSPORT_OVERRIDES", None)
    env.update(overrides)
    return env


def manage(env, *args):
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return done.stdout


def seed_sender(env, domain, algorithm="rsa"):
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.seed_sender", domain, algorithm],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"seeding the sender failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@dataclass
class FaultStack:
    postgres: PrivatePostgres
    redis: PrivateRedis
    dns: DNSServer
    sink: Sink
    env: dict
    logs: Path
    sender: dict
    gateway: object = None
    worker: object = None
    _workers_started: int = 0

    @property
    def submission(self):
        host, port = self.env["POSTERN_SUBMISSION_LISTEN"].rsplit(":", 1)
        return host, int(port)

    @property
    def sender_address(self):
        return f"app@{self.sender['domain']}"

    def start_gateway(self):
        self.gateway = start_gateway(self.env, self.logs)

    def start_worker(self):
        # A new name each time, so that "ready." in the log is this start's.
        self._workers_started += 1
        self.worker = start_worker(self.env, self.logs,
                                   name=f"worker{self._workers_started}")

    def kill(self, process):
        """SIGKILL to the whole process group: no handler runs, nothing is
        flushed, as when a machine loses power under the process."""
        process.stop(sig=signal.SIGKILL)

    def kill_now(self, process):
        """SIGKILL without waiting, for hooks that run inside the sink's loop;
        wait_for_exit() reaps the process afterwards."""
        try:
            os.killpg(process.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait_for_exit(self, process, timeout=30):
        try:
            process.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        process.stop()
        return True

    def add_recipient_domain(self, name):
        """A recipient domain whose MX is the sink. The relay's per-destination
        state (connection slots, rates) is kept per domain, so a test with a
        domain of its own is not slowed by what an earlier test left."""
        self.dns.zone.add_mx(name, f"mx1.{name}", 10)
        self.dns.zone.add_a(f"mx1.{name}", "127.0.0.1")
        return name

    def load(self, prefix, domain=RECIPIENT_DOMAIN, **options):
        host, port = self.submission
        return SteadyLoad(
            host, port, self.sender["username"], self.sender["secret"],
            self.sender_address, [f"rcpt@{domain}"], prefix, **options,
        )

    async def session(self):
        host, port = self.submission
        return await Session(host, port, self.sender["username"],
                             self.sender["secret"], timeout=30).open()

    def query(self, sql, *params):
        with self.postgres.connect() as conn:
            return conn.execute(sql, params).fetchall()

    def recipient_states(self, seqs):
        """seq -> the states of its recipients, from the relay's database."""
        rows = self.query(
            "SELECT m.subject, r.state FROM relay_message m "
            "JOIN relay_recipient r ON r.message_id = m.id "
            "WHERE m.subject = ANY(%s)", [f"load {seq}" for seq in seqs],
        )
        states = {}
        for subject, state in rows:
            states.setdefault(subject.removeprefix("load "), []).append(state)
        return states

    def accepted_attempts(self, seq):
        """How many delivery attempts the relay recorded as 250 for seq."""
        rows = self.query(
            "SELECT count(*) FROM relay_deliveryattempt a "
            "JOIN relay_recipient r ON r.id = a.recipient_id "
            "JOIN relay_message m ON m.id = r.message_id "
            "WHERE m.subject = %s AND a.reply_code = 250", f"load {seq}",
        )
        return rows[0][0]

    def stored(self, seqs):
        """The seqs the relay holds a message for."""
        rows = self.query("SELECT subject FROM relay_message WHERE subject = ANY(%s)",
                          [f"load {seq}" for seq in seqs])
        return {subject.removeprefix("load ") for (subject,) in rows}

    def logs_tail(self, size=4000):
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-size:]}")
        return "\n".join(parts)


# Recipient states after which the relay will not try again.
GIVEN_UP = {"delivered", "bounced", "suppressed", "held", "unconfirmed"}


def arrivals_of(stack, accepted, deadline):
    """Wait for every accepted seq; return (missing, doubled). Stops early
    once every missing recipient is in a state the relay will not retry."""
    end = time.monotonic() + deadline
    missing = set(accepted)
    while missing and time.monotonic() < end:
        missing = stack.sink.wait_for(missing, min(5, end - time.monotonic()))
        states = stack.recipient_states(missing)
        if all(set(states.get(seq, [])) <= GIVEN_UP for seq in missing):
            break
    arrivals = stack.sink.snapshot()
    doubled = {seq: arrivals[seq] for seq in accepted if arrivals[seq] > 1}
    return missing, doubled


def assert_nothing_lost_or_doubled(stack, missing, doubled):
    """Every accepted message arrived exactly once, except those the relay
    shows as unconfirmed: a run killed after it marked the data as sent
    (relay/delivery.py mark_data_sent) is not sent again, by design, so that
    nothing goes out twice; those are counted and printed."""
    states = stack.recipient_states(missing)
    unconfirmed = {seq for seq in missing if states.get(seq) == ["unconfirmed"]}
    print(f"unconfirmed_not_delivered={len(unconfirmed)}")
    lost = missing - unconfirmed
    some = sorted(lost)[:10]
    assert not lost, f"lost {len(lost)}, e.g. {stack.recipient_states(some)}"
    assert not doubled, f"delivered twice or more: {doubled}"


@contextmanager
def fault_stack(run_dir, **env_overrides):
    run_dir = Path(run_dir)
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    postgres = PrivatePostgres().create()
    redis = PrivateRedis().start()
    dns = DNSServer().start()
    sink = Sink("127.0.0.1", free_port()).start()
    stack = None
    try:
        env = relay_env(postgres, redis, dns, sink.port, run_dir, **env_overrides)
        manage(env, "migrate", "--noinput")
        sender = seed_sender(env, "shop.example.test")
        dns.zone.add_txt(sender["dkim_record_name"], sender["dkim_record_value"])
        stack = FaultStack(postgres, redis, dns, sink, env, logs, sender)
        stack.add_recipient_domain(RECIPIENT_DOMAIN)
        stack.start_gateway()
        stack.start_worker()
        yield stack
    finally:
        if stack is not None:
            for process in (stack.worker, stack.gateway):
                if process is not None:
                    process.stop()
        sink.stop()
        dns.stop()
        redis.destroy()
        postgres.destroy()
