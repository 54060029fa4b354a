"""Starting Postern's own processes (gateway, worker) for tests, each in its
own operating-system process, as in production."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(host, port, timeout=30, process=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def wait_for_line(path, text, timeout=60, process=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{text!r} not in {path} after {timeout}s")


class Process:
    def __init__(self, name, args, env, log_dir):
        self.name = name
        self.log = Path(log_dir) / f"{name}.log"
        self._log_file = open(self.log, "ab")
        self.popen = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._log_file.close()

    def output(self):
        return self.log.read_text(errors="replace")


def start_gateway(env, log_dir):
    process = Process(
        "gateway", [sys.executable, "manage.py", "run_gateway"], env, log_dir
    )
    host, port = env["POSTERN_SUBMISSION_LISTEN"].rsplit(":", 1)
    wait_for_port(host, int(port), process=process.popen)
    return process


def start_worker(env, log_dir, name="worker", concurrency=2):
    args = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "relay",
        "worker",
        "-B",
        "--concurrency",
        str(concurrency),
        "--loglevel",
        "INFO",
        "--hostname",
        f"{name}@%h",
        "--schedule",
        str(Path(log_dir) / f"{name}-beat-schedule"),
    ]
    process = Process(name, args, env, log_dir)
    wait_for_line(process.log, "ready.", process=process.popen)
    return process
