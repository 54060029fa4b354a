"""A raw SMTP client for hostile dialogues: bytes out exactly as written,
replies in exactly as received."""

import base64
import socket
import ssl

from tests.support.clients import insecure_client_context


class RawSMTP:
    def __init__(self, host, port, implicit_tls=False, source_address=None,
                 timeout=20, tls_context=None, greeting=True):
        self.sock = socket.create_connection(
            (host, port), timeout=timeout, source_address=source_address
        )
        if implicit_tls:
            context = tls_context or insecure_client_context()
            self.sock = context.wrap_socket(self.sock)
        self.buffer = b""
        self.greeting = self.reply() if greeting else None

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def _line(self):
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; unread {self.buffer!r}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line.decode("utf-8", errors="replace")

    def reply(self):
        """One reply, multi-line replies joined with newlines."""
        lines = [self._line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self._line())
        return "\n".join(lines)

    def command(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def starttls(self, context=None):
        reply = self.command("STARTTLS")
        assert reply.startswith("220"), reply
        self.sock = (context or insecure_client_context()).wrap_socket(self.sock)
        return reply

    def login(self, username, secret):
        blob = base64.b64encode(f"\0{username}\0{secret}".encode()).decode()
        return self.command(f"AUTH PLAIN {blob}")

    def closed_by_server(self):
        """Whether the server has closed the connection (after any data)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buffer += chunk
        except (ConnectionError, ssl.SSLError):
            return True
        except socket.timeout:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def tls_session(endpoint, **kwargs):
    """A raw session past EHLO, STARTTLS and EHLO again."""
    client = RawSMTP(endpoint.submission_host, endpoint.submission_port, **kwargs)
    client.command("EHLO client.example.net")
    client.starttls()
    client.command("EHLO client.example.net")
    return client


def authenticated(endpoint, sender, **kwargs):
    """A raw session past EHLO, STARTTLS and AUTH."""
    client = tls_session(endpoint, **kwargs)
    reply = client.login(sender.username, sender.secret)
    assert reply.startswith("235 2.7.0"), reply
    return client
