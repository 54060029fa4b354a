"""Private PostgreSQL and Redis servers, each on its own loopback port in a
temporary directory, for tests that stop and restart them. Stopping one of
these harms no other test and no other engineer's run."""

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import psycopg
import redis

from tests.support.processes import free_port
from tests.support.waiting import wait_until


def postgres_bin_dir():
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not candidates:
        raise RuntimeError("no PostgreSQL server under /usr/lib/postgresql")
    return Path(candidates[-1])


def wait_or_fail(predicate, timeout, what):
    if not wait_until(predicate, timeout, interval=0.1):
        raise TimeoutError(f"{what} after {timeout}s")


class PrivatePostgres:
    """A PostgreSQL cluster of its own: initdb, then pg_ctl start/stop.

    PostgreSQL refuses to run as root, so under root the cluster belongs to
    the `postgres` system user.
    """

    def __init__(self, name="postern"):
        self.name = name
        self.port = free_port()
        self.bin = postgres_bin_dir()
        self.dir = Path(tempfile.mkdtemp(prefix="postern-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)

    @property
    def url(self):
        return f"postgres://postgres@127.0.0.1:{self.port}/{self.name}"

    def _run(self, *args):
        subprocess.run(
            [str(self.bin / args[0]), *args[1:]], check=True, user=self.user,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.dir,
        )

    def create(self):
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8")
        self.start()
        with self.connect("postgres") as conn:
            conn.autocommit = True
            conn.execute(f'CREATE DATABASE "{self.name}"')
        return self

    def start(self):
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data),
                  "-l", str(self.log), "-o", options)
        wait_or_fail(self.is_up, 30, "PostgreSQL does not answer")

    def stop(self, mode="immediate"):
        """Immediate mode is a crash as far as clients see: connections drop
        at once and the next start replays the write-ahead log."""
        self._run("pg_ctl", "stop", "-w", "-D", str(self.data), "-m", mode)

    def postmaster_pid(self):
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def is_up(self):
        try:
            with self.connect("postgres", connect_timeout=1):
                return True
        except psycopg.OperationalError:
            return False

    def connect(self, dbname=None, **kwargs):
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                               dbname=dbname or self.name, **kwargs)

    def destroy(self):
        if (self.data / "postmaster.pid").exists():
            try:
                self.stop()
            except subprocess.CalledProcessError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis:
    """A redis-server without persistence: a restart loses every queued task,
    as a broker that died and came back empty would."""

    def __init__(self):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="postern-redis-"))
        self.process = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        log = open(self.dir / "server.log", "ab")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        wait_or_fail(self.is_up, 30, "Redis does not answer")
        return self

    def is_up(self):
        try:
            return redis.Redis(port=self.port, socket_timeout=1).ping()
        except redis.RedisError:
            return False

    def kill(self):
        """SIGKILL: whatever the broker held is gone."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def queued_tasks(self, queue):
        return redis.Redis(port=self.port).llen(queue)

    def destroy(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
