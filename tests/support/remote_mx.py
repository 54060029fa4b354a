"""Recipients' mail servers for delivery tests: real SMTP servers on loopback
addresses (127.0.0.x, ::1) that record every transaction with the session it
came in and the peer's address, and can be told to misbehave."""

import asyncio
import itertools
import threading
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller

from tests.support.mx import MXServer


@dataclass
class Transaction:
    mail_from: str
    rcpt_tos: list
    data: bytes
    tls: bool
    peer: str
    session: int
    mail_options: list
    rcpt_options: list


@dataclass
class Behaviour:
    mail_reply: str | None = None  # instead of accepting MAIL FROM
    rcpt_reply: dict = field(default_factory=dict)  # address -> reply line
    data_reply: str | None = None  # instead of accepting
    drop_at_end_of_data: bool = False  # close the connection instead of replying
    slow_seconds: float = 0  # wait before answering the end of data
    # When set, the reply at hold_stage ("rcpt" or "data": the end of data)
    # waits until this event is set; arrived is set as soon as that stage is
    # reached.
    hold: threading.Event | None = None
    hold_stage: str = "data"
    arrived: threading.Event = field(default_factory=threading.Event)

    async def pause_at(self, stage):
        if stage != self.hold_stage:
            return
        self.arrived.set()
        if self.hold is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.hold.wait, 60)


class _Handler:
    def __init__(self, server):
        self.server = server

    async def handle_EHLO(self, smtp, session, envelope, hostname, responses):
        session.host_name = hostname
        # A number per connection: id() of a finished session can come back.
        if not hasattr(session, "number"):
            session.number = next(self.server.numbers)
        self.server.connections.append(smtp.transport)
        if self.server.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, smtp, session, envelope, address, mail_options):
        if self.server.behaviour.mail_reply:
            return self.server.behaviour.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, smtp, session, envelope, address, rcpt_options):
        # What the client sent after this RCPT without waiting for its reply
        # (with PIPELINING, the remaining RCPTs and DATA).
        self.server.unread_at_rcpt.append(bytes(smtp._reader._buffer))
        await self.server.behaviour.pause_at("rcpt")
        reply = self.server.behaviour.rcpt_reply.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.append(list(rcpt_options))
        return "250 2.1.5 OK"

    async def handle_DATA(self, smtp, session, envelope):
        behaviour = self.server.behaviour
        if behaviour.drop_at_end_of_data:
            smtp.transport.close()
            return "421 4.3.0 (never seen: the connection is closed)"
        if behaviour.data_reply:
            return behaviour.data_reply
        # The message is in: recorded now, as a real server would keep it
        # even if the client vanished before the reply below.
        self.server.record(
            Transaction(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                data=envelope.original_content,
                tls=smtp.transport.get_extra_info("ssl_object") is not None,
                peer=session.peer[0],
                session=getattr(session, "number", id(session)),
                mail_options=list(envelope.mail_options),
                rcpt_options=list(envelope.rcpt_options),
            )
        )
        await behaviour.pause_at("data")
        if behaviour.slow_seconds:
            await asyncio.sleep(behaviour.slow_seconds)
        # What the client sent after the end of data without waiting for
        # its reply (with PIPELINING, the next message's envelope).
        self.server.unread_at_end_of_data.append(bytes(smtp._reader._buffer))
        return "250 2.0.0 OK: accepted by test MX"


class RemoteMX(MXServer):
    """The plain test MX, with the handler above."""

    def __init__(self, host, port, tls_context=None, smtputf8=True, pipelining=True):
        super().__init__(host, port, tls_context)
        self.behaviour = Behaviour()
        self.pipelining = pipelining
        self.connections = []  # transports of the sessions greeted so far
        self.numbers = itertools.count(1)
        self.unread_at_rcpt = []
        self.unread_at_end_of_data = []
        self.controller = Controller(
            _Handler(self),
            hostname=host,
            port=port,
            tls_context=tls_context,
            decode_data=False,
            ident="test MX",
            ready_timeout=10,
            enable_SMTPUTF8=smtputf8,
        )

    def close_connections(self):
        """Hang up on every client, as a server does with idle sessions."""
        for transport in self.connections:
            self.controller.loop.call_soon_threadsafe(transport.close)

    @property
    def recipients(self):
        return [rcpt for t in self.received for rcpt in t.rcpt_tos]

    def stop(self):
        if self.behaviour.hold is not None:
            self.behaviour.hold.set()
        super().stop()
