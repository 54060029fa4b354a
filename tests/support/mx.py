"""A recipient's mail server for tests: a real SMTP server on loopback that
records what it receives and can be told to misbehave."""

import threading
import time
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list
    data: bytes
    tls: bool


@dataclass
class Behaviour:
    """Replies to give instead of accepting; None means accept."""

    rcpt_reply: dict = field(default_factory=dict)  # address -> reply line
    data_reply: str | None = None


class _Handler:
    def __init__(self, server):
        self.server = server

    async def handle_RCPT(self, smtp, session, envelope, address, rcpt_options):
        reply = self.server.behaviour.rcpt_reply.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, smtp, session, envelope):
        if self.server.behaviour.data_reply:
            return self.server.behaviour.data_reply
        tls = smtp.transport.get_extra_info("ssl_object") is not None
        self.server.record(
            Received(envelope.mail_from, list(envelope.rcpt_tos),
                     envelope.original_content, tls)
        )
        return "250 2.0.0 OK: accepted by test MX"


class MXServer:
    def __init__(self, host, port, tls_context=None):
        self.host, self.port = host, port
        self.behaviour = Behaviour()
        self.received = []
        self._cond = threading.Condition()
        # With a tls_context the server offers STARTTLS; without, it does not.
        self.controller = Controller(
            _Handler(self), hostname=host, port=port, tls_context=tls_context,
            decode_data=False, ident="test MX",
        )

    def record(self, received):
        with self._cond:
            self.received.append(received)
            self._cond.notify_all()

    def wait_for(self, count, timeout=30):
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self.received)

    def reset(self):
        with self._cond:
            self.received.clear()
        self.behaviour = Behaviour()

    def start(self):
        self.controller.start()
        return self

    def stop(self):
        self.controller.stop()
