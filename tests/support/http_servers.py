"""Small HTTP(S) servers on loopback for delivery tests: a webhook receiver
that records posts, and a server for an MTA-STS policy."""

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Post:
    path: str
    headers: dict
    body: bytes


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        body = self.server.owner.pages.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        owner = self.server.owner
        status = owner.statuses.pop(0) if owner.statuses else 200
        owner.record(Post(self.path, dict(self.headers), body), status)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


class LoopbackHTTP:
    """statuses: the replies to give to posts, in order; then 200."""

    def __init__(self, host="127.0.0.1", tls_context=None):
        self.pages = {}
        self.statuses = []
        self.posts = []  # (Post, status given)
        self._cond = threading.Condition()
        self.server = _Server((host, 0), _Handler)
        self.server.owner = self
        if tls_context is not None:
            self.server.socket = tls_context.wrap_socket(
                self.server.socket, server_side=True
            )
        self.host, self.port = host, self.server.server_address[1]

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    def record(self, post, status):
        with self._cond:
            self.posts.append((post, status))
            self._cond.notify_all()

    def wait_for(self, count, timeout=20):
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.posts) < count and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            return list(self.posts)

    def start(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
