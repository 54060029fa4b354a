"""An asyncio SMTP submission client (STARTTLS, AUTH PLAIN) and a load that
sends uniquely numbered messages from many concurrent sessions.

The client records how far each message got, because that decides what the
relay owes it: a 250 after the final dot means the message must arrive; a
session that broke before the final dot was written means it must not; a
session that broke after the dot and before the reply may go either way
(RFC 1047).
"""

import asyncio
import base64
import itertools
import ssl
import threading
import time
from dataclasses import dataclass, field

from tests.support.sink import SEQ_HEADER

ACCEPTED = "accepted"  # 250 to the final dot
REFUSED = "refused"  # a reply other than 250 to some command
BROKEN_BEFORE_DOT = "broken_before_dot"  # never reached the server whole
BROKEN_AFTER_DOT = "broken_after_dot"  # sent whole, no reply seen


class Reply(Exception):
    """A reply the client did not want; the session is still usable."""

    def __init__(self, code, text):
        super().__init__(f"{code} {text}")
        self.code, self.text = code, text


class SessionBroken(Exception):
    pass


def client_tls_context():
    # The gateway's test certificate is self-signed.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def dot_stuff(data):
    """RFC 5321 section 4.5.2: a line starting with a dot gets one more."""
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed


class Session:
    """One SMTP session: open() to EHLO, STARTTLS, EHLO, AUTH; then send()
    as many messages as wanted."""

    def __init__(self, host, port, username, secret, timeout=60):
        self.host, self.port = host, port
        self.username, self.secret = username, secret
        self.timeout = timeout
        self.reader = self.writer = None
        self.data_sent_at = None

    async def _reply(self):
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), self.timeout)
            if not line.endswith(b"\n"):
                raise SessionBroken("connection closed")
            lines.append(line.rstrip(b"\r\n"))
            if line[3:4] != b"-":
                break
        code = int(lines[-1][:3])
        return code, b"\n".join(item[4:] for item in lines).decode(errors="replace")

    async def _command(self, line, expect):
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()
        code, text = await self._reply()
        if code != expect:
            raise Reply(code, text)
        return text

    async def open(self, tls=True, login=True):
        try:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout
            )
            code, text = await self._reply()
            if code != 220:
                raise Reply(code, text)
            await self._command("EHLO load.example.net", 250)
            if tls:
                await self._command("STARTTLS", 220)
                await self.writer.start_tls(client_tls_context())
                await self._command("EHLO load.example.net", 250)
            if login:
                blob = base64.b64encode(f"\0{self.username}\0{self.secret}".encode())
                await self._command(f"AUTH PLAIN {blob.decode()}", 235)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
            raise SessionBroken(str(exc)) from exc
        return self

    async def send(self, mail_from, rcpt_tos, data, pause_in_data=None):
        """Returns (outcome, code, text). pause_in_data, if given, is awaited
        after half of the data is written and before the rest."""
        dot_written = False
        try:
            await self._command(f"MAIL FROM:<{mail_from}>", 250)
            for rcpt in rcpt_tos:
                await self._command(f"RCPT TO:<{rcpt}>", 250)
            # Latency is measured from here (bench/): the client's DATA.
            self.data_sent_at = time.monotonic()
            await self._command("DATA", 354)
            body = dot_stuff(data)
            if pause_in_data is not None:
                half = len(body) // 2
                self.writer.write(body[:half])
                await self.writer.drain()
                body = body[half:]
                await pause_in_data()
            dot_written = True
            self.writer.write(body + b".\r\n")
            await self.writer.drain()
            code, text = await self._reply()
        except Reply as refused:
            await self._reset()
            return REFUSED, refused.code, refused.text
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                SessionBroken) as exc:
            self.close()
            outcome = BROKEN_AFTER_DOT if dot_written else BROKEN_BEFORE_DOT
            return outcome, None, str(exc)
        if code == 250:
            return ACCEPTED, code, text
        return REFUSED, code, text

    async def _reset(self):
        try:
            await self._command("RSET", 250)
        except (Reply, OSError, asyncio.TimeoutError, SessionBroken):
            self.close()

    @property
    def is_open(self):
        return self.writer is not None and not self.writer.is_closing()

    async def quit(self):
        if self.is_open:
            try:
                await self._command("QUIT", 221)
            except (Reply, OSError, asyncio.TimeoutError, SessionBroken):
                pass
        self.close()

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def numbered_message(sender, rcpt, seq, size=0):
    """A message carrying its sequence number in a header and the Subject;
    size pads the body to about that many bytes."""
    head = (
        f"From: Load <{sender}>\r\nTo: <{rcpt}>\r\nSubject: load {seq}\r\n"
        f"{SEQ_HEADER}: {seq}\r\n\r\n"
    ).encode()
    line = b"Invoice line item, amount due, reference number 1042.\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return head + body


@dataclass
class Record:
    outcome: str
    code: int | None
    text: str
    submitted_at: float  # time.monotonic() when the transaction began
    answered_at: float


@dataclass
class SteadyLoad:
    """Sends numbered messages from `sessions` concurrent sessions, each
    waiting `interval` seconds between messages, until stopped or `limit`
    messages have been tried. A broken session is opened again after a short
    pause, as a real client would.

    Runs its own event loop in a thread, so that a test can cause faults
    while the load goes on.
    """

    host: str
    port: int
    username: str
    secret: str
    sender: str
    recipients: list
    prefix: str
    sessions: int = 4
    interval: float = 0.05
    limit: int = 2000
    size: int = 1024
    records: dict = field(default_factory=dict)  # seq -> Record
    open_failures: list = field(default_factory=list)  # (code, text); code None: broken

    def __post_init__(self):
        self._numbers = itertools.count(1)
        self._stop = threading.Event()
        self._thread = None
        self._lock = threading.Lock()

    def start(self):
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),),
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout=120):
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the load did not stop"
        return self.records

    def with_outcome(self, *outcomes):
        with self._lock:
            return {seq for seq, r in self.records.items() if r.outcome in outcomes}

    def wait_for_accepted(self, count, timeout):
        """Wait until `count` more messages are accepted than now."""
        target = len(self.with_outcome(ACCEPTED)) + count
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.with_outcome(ACCEPTED)) >= target:
                return True
            time.sleep(0.05)
        return False

    async def _run(self):
        await asyncio.gather(*(self._session_loop() for _ in range(self.sessions)))

    async def _session_loop(self):
        session = None
        while not self._stop.is_set():
            number = next(self._numbers)
            if number > self.limit:
                break
            seq = f"{self.prefix}-{number}"
            if session is None or not session.is_open:
                session = await self._open()
                if session is None:
                    continue
            data = numbered_message(self.sender, self.recipients[0], seq, self.size)
            started = time.monotonic()
            outcome, code, text = await session.send(self.sender, self.recipients, data)
            with self._lock:
                self.records[seq] = Record(outcome, code, text, started,
                                           time.monotonic())
            await asyncio.sleep(self.interval)
        if session is not None:
            await session.quit()

    async def _open(self):
        try:
            return await Session(self.host, self.port, self.username,
                                 self.secret, timeout=30).open()
        except Reply as refused:
            self.open_failures.append((refused.code, refused.text))
        except SessionBroken as exc:
            self.open_failures.append((None, str(exc)))
        await asyncio.sleep(0.3)
        return None
