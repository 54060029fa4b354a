"""aiosmtpd's SMTP session, made strict for a relay.

What is changed from the library, and why:
- every reply carries an enhanced status code (RFC 2034);
- MAIL and RCPT parameters are parsed here (SIZE, BODY, SMTPUTF8 and the DSN
  parameters of RFC 3461), keeping the case of ENVID and ORCPT;
- command line limits are fixed per session, instead of a dictionary shared
  by every session that grows with each EHLO;
- the idle timer restarts on every byte received, so a long DATA transfer is
  not cut; a total session limit bounds clients that trickle;
- sessions register themselves so that shutdown can let transactions finish.
"""

import logging
import re
import secrets

from aiosmtpd.smtp import MISSING, SMTP

from smtp_gateway.params import parse_mail_params, parse_path, parse_rcpt_params

log = logging.getLogger("postern.gateway")

# aiosmtpd answers some commands without an enhanced status code; RFC 2034
# requires one on every reply but the greeting and HELO/EHLO once
# ENHANCEDSTATUSCODES is advertised.
_REPLACED_REPLIES = {
    "250 OK": "250 2.0.0 OK",
    "221 Bye": "221 2.0.0 Bye",
    "220 Ready to start TLS": "220 2.0.0 Ready to start TLS",
    "500 Command line too long": (
        "500 5.5.2 Command line too long (RFC 5321 4.5.3.1.4)"
    ),
    "500 Line too long (see RFC5321 4.5.3.1.6)": (
        "500 5.5.2 Message line longer than 1000 octets (RFC 5321 4.5.3.1.6)"
    ),
    "552 Error: Too much mail data": "552 5.3.4 Message exceeds the size limit",
    "530 Must issue a STARTTLS command first": (
        "530 5.7.0 Must issue a STARTTLS command first"
    ),
}
_FAILURE_DEFAULTS = {
    "421": "4.3.2",
    "454": "4.7.0",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.7.0",
}
_HAS_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}( |$)")

# RFC 5321 section 4.5.3.1.4: 512 octets for a command line, which extensions
# may raise: SIZE (RFC 1870) by 26, SMTPUTF8 by 10 (RFC 6531), RET and ENVID
# by 16 + 100 and NOTIFY and ORCPT by 34 + 500 (RFC 3461 section 5). The
# library reads no line longer than 1001 octets, so a RCPT whose ORCPT uses
# its full 500 characters is refused as too long: a known limit that no client
# seen so far reaches.
COMMAND_LIMIT = 512
COMMAND_LIMITS = {"MAIL": COMMAND_LIMIT + 26 + 10 + 16 + 100, "RCPT": 512 + 34 + 500}

HELP_TEXT = (
    "214 2.0.0 Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA RSET NOOP "
    "HELP QUIT; see RFC 5321"
)
SHUTDOWN_REPLY = "421 4.3.2 Service shutting down, try again later"


def with_enhanced_code(status):
    if isinstance(status, bytes):  # an AUTH challenge, "334 ..."
        return status
    if status in _REPLACED_REPLIES:
        return _REPLACED_REPLIES[status]
    code, _, text = status.partition(" ")
    default = _FAILURE_DEFAULTS.get(code)
    if default and not _HAS_ENHANCED.match(text):
        return f"{code} {default} {text}"
    return status


def _is_ascii(text):
    return all(ord(c) < 128 for c in text)


class _FixedLimits(dict):
    def __missing__(self, command):
        return COMMAND_LIMIT


class SubmissionSMTP(SMTP):
    def __init__(self, handler, *, sessions, implicit_tls=False, session_limit=1800,
                 **kwargs):
        super().__init__(handler, **kwargs)
        self.sessions = sessions
        self.implicit_tls = implicit_tls
        self.session_limit = session_limit
        # Carried into every log line about this session.
        self.trace_id = secrets.token_hex(4)
        self._session_timer = None
        if implicit_tls:
            # The transport is TLS from its first byte; aiosmtpd only knows TLS
            # that came through STARTTLS, so its own check would refuse AUTH.
            self._auth_require_tls = False

    # aiosmtpd keeps these limits in a class attribute shared by every session
    # and adds to it on each EHLO; a property gives each use the fixed values.
    @property
    def command_size_limits(self):
        return _FixedLimits(COMMAND_LIMITS)

    @property
    def tls_active(self):
        return self.implicit_tls or self._tls_protocol is not None

    @property
    def closing(self):
        return self.transport is None or self.transport.is_closing()

    @property
    def in_transaction(self):
        return self.envelope is not None and self.envelope.mail_from is not None

    async def push(self, status):
        await super().push(with_enhanced_code(status))

    def connection_made(self, transport):
        first = self.transport is None
        if not first:
            # After STARTTLS aiosmtpd starts a new session (RFC 3207 4.2);
            # the client address from the PROXY header must survive it.
            proxy_data = self.session.proxy_data
            super().connection_made(transport)
            self.session.proxy_data = proxy_data
            return
        super().connection_made(transport)
        self.sessions.add(self)
        self._session_timer = self.loop.call_later(
            self.session_limit, self.close_with, "421 4.4.2 Session time limit reached"
        )
        if self.implicit_tls:
            self.session.ssl = {"cipher": transport.get_extra_info("cipher")}

    def connection_lost(self, error):
        if self in self.sessions:
            self.sessions.discard(self)
            self.event_handler.session_closed(self.session)
        if self._session_timer is not None:
            self._session_timer.cancel()
        super().connection_lost(error)

    def data_received(self, data):
        # Idle means nothing received, also in the middle of DATA.
        self._reset_timeout()
        super().data_received(data)

    def _reset_timeout(self, duration=None):
        # Called for every command and every chunk received. Moving the timer
        # each time cost more than reading the rest of a small message, so
        # the deadline moves and the timer stays, unless the new deadline is
        # sooner; a timer that fires early waits for the deadline.
        self._idle_deadline = self.loop.time() + (duration or self._timeout_duration)
        handle = self._timeout_handle
        if handle is not None and not handle.cancelled():
            if handle.when() <= self._idle_deadline:
                return
            handle.cancel()
        self._timeout_handle = self.loop.call_at(self._idle_deadline, self._idle_timer)

    def _idle_timer(self):
        if self.loop.time() < self._idle_deadline:
            self._timeout_handle = self.loop.call_at(
                self._idle_deadline, self._idle_timer
            )
            return
        self._timeout_cb()

    def _timeout_cb(self):
        self.close_with("421 4.4.2 Idle for too long, closing connection")

    def close_with(self, reply):
        """Say why and close, whatever the session is doing."""
        if self.transport is None or self.transport.is_closing():
            return
        log.info("event=session_closed %s reply=%r", self.who, reply)
        self.transport.write(reply.encode() + b"\r\n")
        self.transport.close()

    @property
    def who(self):
        return f"session={self.trace_id} peer={self.peer_ip}"

    @property
    def peer_ip(self):
        session = self.session
        if session is None:
            return None
        proxy = session.proxy_data
        if proxy is not None and proxy.valid and proxy.src_addr:
            return str(proxy.src_addr)
        peer = session.peer
        return peer[0] if isinstance(peer, tuple) else None

    async def smtp_STARTTLS(self, arg):
        if self.tls_active:
            await self.push("503 5.5.1 TLS is already active")
            return
        await super().smtp_STARTTLS(arg)

    async def smtp_HELP(self, arg):
        await self.push(HELP_TEXT)

    async def smtp_VRFY(self, arg):
        # Address verification tells an attacker which mailboxes exist.
        await self.push("502 5.5.1 VRFY is disabled")

    async def smtp_EXPN(self, arg):
        await self.push("502 5.5.1 EXPN is disabled")

    async def _envelope_command(self, keyword, arg, parse_params):
        """The address and parameters of MAIL or RCPT, or None after a
        refusal has been sent."""
        params, problem = None, None
        rest = self._strip_command_keyword(keyword, arg or "")
        parsed = None if rest is None else parse_path(rest)
        if rest is None:
            problem = f"501 5.5.4 Syntax: {keyword} <address> [parameters]"
        elif parsed is None:
            problem = "553 5.1.3 Malformed address (RFC 5321 4.1.2)"
        elif parsed[1].strip() and not self.session.extended_smtp:
            problem = "501 5.5.4 Parameters need EHLO"
        else:
            params, problem = parse_params(parsed[1])
        if problem:
            await self.push(problem)
            return None
        return parsed[0], params

    async def smtp_MAIL(self, arg):
        if self.event_handler.stopping:
            # No new transaction once shutdown has begun.
            self.close_with(SHUTDOWN_REPLY)
            return
        if await self.check_helo_needed() or await self.check_auth_needed("MAIL"):
            return
        if self.in_transaction:
            await self.push("503 5.5.1 Nested MAIL command")
            return
        command = await self._envelope_command(
            "FROM:", arg,
            lambda text: parse_mail_params(
                text, size_limit=self.data_size_limit,
                smtputf8_enabled=self.enable_SMTPUTF8,
            ),
        )
        if command is None:
            return
        address, params = command
        if not _is_ascii(address) and not params.get("SMTPUTF8"):
            await self.push("553 5.6.7 A non-ASCII address needs SMTPUTF8 (RFC 6531)")
            return
        status = await self._call_handler_hook("MAIL", address, params)
        if status is MISSING:
            status = "451 4.3.0 Sender not checked"
        elif status.startswith("250"):
            self.envelope.mail_from = address
            self.envelope.smtp_utf8 = bool(params.get("SMTPUTF8"))
            self.envelope.mail_params = params
            self.envelope.rcpt_params = []
        await self.push(status)

    async def smtp_RCPT(self, arg):
        if await self.check_helo_needed() or await self.check_auth_needed("RCPT"):
            return
        if not self.in_transaction:
            await self.push("503 5.5.1 Need MAIL command first")
            return
        command = await self._envelope_command("TO:", arg, parse_rcpt_params)
        if command is None:
            return
        address, params = command
        if not address:
            await self.push("501 5.5.4 Syntax: TO: <address> [parameters]")
            return
        if not _is_ascii(address) and not self.envelope.smtp_utf8:
            await self.push("553 5.6.7 A non-ASCII address needs SMTPUTF8 (RFC 6531)")
            return
        status = await self._call_handler_hook("RCPT", address, params)
        if status is MISSING:
            status = "451 4.3.0 Recipient not checked"
        elif status.startswith("250"):
            self.envelope.rcpt_tos.append(address)
            self.envelope.rcpt_params.append(params)
        await self.push(status)
