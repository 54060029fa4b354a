"""The recipients' MX for fault tests and benchmarks: a real SMTP server on
loopback that counts arrivals by the sequence header the load puts in every
message, so that a lost or doubled message shows at once.

It can be stopped and started again on the same port (an MX that is down for
a while), and hooks let a test act at an exact point of a delivery.
"""

import re
import threading
import time
from collections import Counter

from aiosmtpd.controller import Controller

SEQ_HEADER = "X-Postern-Load-Seq"
_SEQ = re.compile(rb"^" + SEQ_HEADER.encode() + rb":[ \t]*(\S+)", re.I | re.M)


def sequence_of(data):
    """The load sequence number in a message's header section, or None."""
    found = _SEQ.search(header_section(data))
    return found.group(1).decode() if found else None


def header_section(data):
    return data.split(b"\r\n\r\n", 1)[0]


def is_dkim_signed(data):
    found = re.search(rb"^DKIM-Signature:", header_section(data), re.I | re.M)
    return found is not None


class _Handler:
    def __init__(self, sink):
        self.sink = sink

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        # Like the mail servers it stands in for: aiosmtpd reads pipelined
        # commands in turn but does not announce it.
        session.host_name = hostname
        responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.sink.on_rcpt is not None:
            self.sink.on_rcpt(address)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content
        signed = is_dkim_signed(data)
        self.sink.record(sequence_of(data), len(envelope.rcpt_tos), signed)
        if self.sink.on_accept is not None:
            # Runs once the 250 below has been written to the socket: the
            # client has its answer and nothing of its own has run yet.
            server.loop.call_soon(self.sink.on_accept, sequence_of(data))
        return "250 2.0.0 OK: accepted by sink"


class Sink:
    def __init__(self, host, port):
        self.host, self.port = host, port
        self.arrivals = Counter()  # seq -> recipients delivered to
        self.arrived_at = {}  # seq -> time.monotonic() of the first arrival
        self.signed = 0  # messages that arrived with a DKIM-Signature
        self.on_rcpt = None
        self.on_accept = None
        self._cond = threading.Condition()
        self._controller = None

    def start(self):
        self._controller = Controller(
            _Handler(self), hostname=self.host, port=self.port, decode_data=False,
            ident="load sink", data_size_limit=64 * 1024 * 1024,
        )
        self._controller.start()
        return self

    def stop(self):
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def record(self, seq, recipients, signed=False):
        with self._cond:
            self.arrivals[seq] += recipients
            self.signed += signed
            self.arrived_at.setdefault(seq, time.monotonic())
            self._cond.notify_all()

    def count(self, seq):
        with self._cond:
            return self.arrivals[seq]

    def wait_for(self, seqs, timeout):
        """Wait until every seq has arrived; returns those still missing."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                missing = {seq for seq in seqs if self.arrivals[seq] == 0}
                left = deadline - time.monotonic()
                if not missing or left <= 0:
                    return missing
                self._cond.wait(min(left, 1))

    def wait_for_count(self, seq, count, timeout):
        """Wait until seq has arrived count times; returns how often it has."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.arrivals[seq] < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 1))
            return self.arrivals[seq]

    def snapshot(self):
        with self._cond:
            return Counter(self.arrivals)
