"""The systems under measurement, started from nothing: Postern (its own
PostgreSQL and Redis, the test DNS server, the gateway and a worker) and, for
reference, Postfix with or without OpenDKIM. Both relay to the same sink."""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench import postfix
from bench.load import Target
from tests.support.dns_server import DNSServer
from tests.support.fault_stack import manage, relay_env, seed_sender
from tests.support.processes import ROOT, free_port, start_gateway, start_worker
from tests.support.services import PrivatePostgres, PrivateRedis, wait_or_fail

RECIPIENT_DOMAIN = "sink.example.net"
SENDER_DOMAINS = {"rsa": "rsa.bench.example.test", "ed25519": "ed.bench.example.test"}


class SinkProcess:
    def __init__(self, port, run_dir):
        self.port = port
        self.status_path = Path(run_dir) / f"sink-{time.monotonic_ns()}.json"
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.sink_process", str(self.port),
             str(self.status_path)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )
        assert self.process.stdout.readline().strip() == "ready"
        return self

    def status(self):
        try:
            return json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return {"messages": 0, "recipients": 0}

    def wait_for(self, recipients, timeout):
        """Wait until `recipients` deliveries have arrived; returns whether
        they did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status()["recipients"] >= recipients:
                return True
            time.sleep(0.1)
        return False

    def stop(self):
        """Stop and return the final status with every arrival time."""
        self.process.terminate()
        self.process.wait(30)
        return self.status()


class Postern:
    name = "postern"

    def __init__(self, run_dir, sink_port):
        self.run_dir = Path(run_dir)
        self.logs = self.run_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.sink_port = sink_port
        self.gateway = self.worker = None
        self.postgres = PrivatePostgres().create()
        self.redis = PrivateRedis().start()
        self.dns = DNSServer().start()
        try:
            self._prepare()
        except BaseException:
            # A stack that cannot start leaves no PostgreSQL or Redis behind.
            self.stop()
            raise

    def _prepare(self):
        self.dns.zone.add_mx(RECIPIENT_DOMAIN, f"mx1.{RECIPIENT_DOMAIN}", 10)
        self.dns.zone.add_a(f"mx1.{RECIPIENT_DOMAIN}", "127.0.0.1")
        self.env = relay_env(
            self.postgres, self.redis, self.dns, self.sink_port, self.run_dir,
            # Recovery at production pace: the sweeper must not re-enqueue
            # work that is merely queued behind the load.
            POSTERN_SWEEP_INTERVAL="30", POSTERN_STALE_AFTER="300",
            POSTERN_DELIVERY_FIRST_RETRY="300", POSTERN_DELIVERY_MAX_BACKOFF="3600",
            # One credential holds the idle scenario's 1,000 sessions.
            POSTERN_MAX_CONNECTIONS_PER_CREDENTIAL="5000",
        )
        manage(self.env, "migrate", "--noinput")
        self.senders = {
            algorithm: seed_sender(self.env, domain, algorithm)
            for algorithm, domain in SENDER_DOMAINS.items()
        }
        self.workers, self.overrides = 0, None
        self.starts = 0

    def configure(self, workers, overrides, fresh_gateway=False):
        """Run `workers` worker processes, and the gateway and workers with
        these settings on top; restarts only what has to change (and the
        gateway when fresh_gateway)."""
        if overrides != self.overrides or fresh_gateway:
            for process in (self.worker, self.gateway):
                if process is not None:
                    process.stop()
            self.gateway = self.worker = None
            self.gateway = start_gateway({**self.env, **overrides}, self.logs)
            self.overrides = overrides
        if self.worker is None or workers != self.workers:
            if self.worker is not None:
                self.worker.stop()
            self.starts += 1
            self.worker = start_worker({**self.env, **overrides}, self.logs,
                                       name=f"worker{self.starts}", concurrency=workers)
            self.workers = workers

    def target(self, dkim="rsa"):
        host, port = self.env["POSTERN_SUBMISSION_LISTEN"].rsplit(":", 1)
        sender = self.senders[dkim]
        return _target(host, int(port), f"app@{sender['domain']}",
                       sender["username"], sender["secret"], auth=True)

    def roles(self):
        return {
            "gateway": [self.gateway.popen.pid],
            "workers": [self.worker.popen.pid],
            "postgres": [self.postgres.postmaster_pid()],
            "redis": [self.redis.process.pid],
        }

    def stop(self):
        for process in (self.worker, self.gateway):
            if process is not None:
                process.stop()
        self.dns.stop()
        self.redis.destroy()
        self.postgres.destroy()


class Reference:
    """Postfix relaying to the sink; with dkim=True, OpenDKIM signs RSA-2048.

    Known difference from Postern's load: Postfix gets STARTTLS but no AUTH
    (SMTP AUTH in Postfix needs a Cyrus or Dovecot SASL service); it relays
    for loopback clients by network instead.
    """

    def __init__(self, run_dir, sink_port, tls_cert, tls_key, dkim):
        self.name = "postfix+opendkim" if dkim else "postfix"
        self.port = free_port()
        self.milter = None
        if dkim:
            self.milter = postfix.OpenDKIM(free_port(), SENDER_DOMAINS["rsa"]).start()
            _wait_for_port(self.milter.port)
        self.postfix = postfix.Postfix(self.port, sink_port, tls_cert, tls_key,
                                       dkim=self.milter).start()
        _wait_for_port(self.port)

    def target(self, dkim="rsa"):
        return _target("127.0.0.1", self.port, f"app@{SENDER_DOMAINS['rsa']}",
                       auth=False)

    def roles(self):
        roles = {"postfix": [self.postfix.process.pid]}
        if self.milter is not None:
            roles["opendkim"] = [self.milter.process.pid]
        return roles

    def stop(self):
        self.postfix.stop()
        if self.milter is not None:
            self.milter.stop()


def _target(host, port, sender, username="", secret="", auth=True):
    return Target(host, port, sender, username, secret, tls=True, auth=auth)


def _wait_for_port(port):
    def listening():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    wait_or_fail(listening, 30, f"nothing listens on 127.0.0.1:{port}")
