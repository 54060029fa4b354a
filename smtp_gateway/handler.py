"""What the gateway does at each SMTP command: cheap checks, then a durable
commit, then the pipeline is enqueued. Database and Redis work runs in a
thread pool so that one slow query never stalls the other sessions on the
event loop."""

import asyncio
import binascii
import logging
from base64 import b64decode
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiosmtpd.smtp import MISSING, AuthResult
from django import db

from policies.message_syntax import check_message_syntax
from policies.sender import (
    check_envelope_sender,
    check_header_sender,
    is_plausible_recipient,
    listed_from_and_subject,
    parse_headers,
    parse_identity_patterns,
    verified_domain_names,
)
from relay.intake import accept_message, enqueue_processing
from smtp_gateway import auth_guard, rate_limits
from smtp_gateway.models import SecurityEvent
from tenants.credentials import authenticate

log = logging.getLogger("postern.gateway")

TEMPORARY_FAILURE = "451 4.3.0 Temporary failure, please try again later"
# RFC 5321 section 4.5.3.1.6: 998 octets and CRLF. The library allows one
# more octet for a transparency dot on every line; this is checked after the
# dots are removed. Longer lines would be cut or refused further on, and a
# cut line breaks the DKIM signature.
LINE_TOO_LONG = "500 5.5.2 Message line longer than 1000 octets (RFC 5321 4.5.3.1.6)"


def has_overlong_line(raw):
    """A line over 998 octets before its CRLF (RFC 5321 4.5.3.1.6). Called
    after bare CR and LF were refused, so every line ends with CRLF. (A
    regular expression for a run of 999 octets tries it at every position:
    about 20 ms for 100 KB, against 0.1 ms for this.)"""
    return max(map(len, raw.split(b"\r\n"))) > 998


@dataclass(frozen=True)
class Identity:
    """Who authenticated on a session; the gateway's snapshot at AUTH time."""

    credential_id: int
    tenant_id: int
    username: str
    domains: frozenset
    identities: tuple
    max_message_size: int
    max_recipients: int
    max_connections: int
    limits: tuple


@dataclass(frozen=True)
class GatewayPolicy:
    max_message_size: int
    max_recipients: int
    max_connections: int
    default_limits: dict
    guard: auth_guard.GuardPolicy


def has_bare_line_ending(raw):
    """RFC 5321 section 2.3.8: lines end with CRLF; a CR or LF alone is how a
    second message is smuggled past a server that reads the end of data
    differently from the next hop. Refused whole, never normalised.

    Each CRLF holds one CR and one LF, so there is a CR or LF alone exactly
    when either count is higher than the count of CRLF; three counts cost
    less than a search with look-behind."""
    pairs = raw.count(b"\r\n")
    return raw.count(b"\r") != pairs or raw.count(b"\n") != pairs


def _log_refusal(server, command, refusal):
    log.info("event=refused %s command=%s reply=%r", server.who, command,
             str(refusal))


def _login(username, password, peer_ip, policy):
    db.close_old_connections()
    credential = authenticate(username, password, peer_ip)
    if credential is None:
        return None
    return Identity(
        credential_id=credential.id,
        tenant_id=credential.tenant_id,
        username=credential.username,
        domains=verified_domain_names(credential.tenant_id),
        identities=parse_identity_patterns(credential.allowed_identities),
        max_message_size=min(
            credential.max_message_size or policy.max_message_size,
            policy.max_message_size,
        ),
        # A credential's own limits can only tighten the platform's.
        max_recipients=min(
            credential.max_recipients or policy.max_recipients, policy.max_recipients
        ),
        max_connections=min(
            credential.max_connections or policy.max_connections,
            policy.max_connections,
        ),
        limits=rate_limits.credential_limits(credential, policy.default_limits),
    )


def _record_event(kind, peer_ip, username, detail=""):
    db.close_old_connections()
    SecurityEvent.objects.create(
        kind=kind, client_address=peer_ip, username=username[:64], detail=detail[:300]
    )


def _store(identity, envelope, raw, headers, peer_ip):
    db.close_old_connections()
    header_from, subject = listed_from_and_subject(headers)
    message = accept_message(
        tenant_id=identity.tenant_id,
        credential_id=identity.credential_id,
        mail_from=envelope.mail_from,
        envelope_params=envelope.mail_params,
        rcpt_tos=list(envelope.rcpt_tos),
        rcpt_params=list(envelope.rcpt_params),
        raw=raw,
        header_from=header_from,
        subject=subject,
        client_address=peer_ip,
    )
    enqueue_processing(message)
    return message.queue_id


def _rate_reply(full):
    limit, retry_after = full
    return (
        f"451 4.7.1 Sending limit of {limit.name} reached for this credential; "
        f"retry in {retry_after} seconds"
    )


class SubmissionHandler:
    def __init__(self, policy, counters, workers=8):
        self.policy = policy
        self.counters = counters
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gw-db")
        # Authenticated sessions per credential in this process. Kept here and
        # not in Redis so that a killed process leaves nothing behind; the
        # limit therefore applies per gateway process.
        self.connections = Counter()
        self.stopping = False

    async def _in_thread(self, func, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, func, *args)

    def _count_here(self, who, func, *args):
        """Run a step on the shared counters; returns (result, whether it ran).

        The counters live in Redis beside the broker. When Redis is down,
        intake goes on without limits or brute-force counting rather than
        stopping, as it goes on without the broker (relay/intake.py)."""
        try:
            return func(self.counters, *args), True
        except Exception as exc:
            log.warning("event=counters_unavailable %s step=%s error=%s", who,
                        func.__name__, type(exc).__name__)
            return None, False

    async def _count(self, server, func, *args):
        return await self._in_thread(self._count_here, server.who, func, *args)

    async def handle_PROXY(self, server, session, envelope, proxy_data):
        return bool(proxy_data and proxy_data.valid)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        final = responses.pop()  # "250 HELP"
        if isinstance(session.auth_data, Identity):
            # After AUTH the credential's own limit is the one that counts
            # (RFC 1870 section 4 lets a server announce what applies).
            size = f"250-SIZE {session.auth_data.max_message_size}"
            responses = [size if r.startswith("250-SIZE") else r for r in responses]
        responses += ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250-DSN", final]
        return responses

    def session_closed(self, session):
        identity = session.auth_data
        if isinstance(identity, Identity):
            self.connections[identity.credential_id] -= 1
            if self.connections[identity.credential_id] <= 0:
                del self.connections[identity.credential_id]

    # AUTH mechanisms are implemented here rather than by aiosmtpd's built-ins,
    # whose authenticator callback is synchronous and would run the database
    # lookup on the event loop.
    async def auth_PLAIN(self, server, args):
        if len(args) == 1:
            blob = await server.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            blob = await self._decode(server, args[1])
            if blob is None:
                return AuthResult(success=False, handled=True)
        # RFC 4616: [authzid] NUL authcid NUL passwd
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            await server.push("501 5.5.2 Cannot split the PLAIN credentials")
            return AuthResult(success=False, handled=True)
        return await self._check(server, parts[1], parts[2])

    async def auth_LOGIN(self, server, args):
        if len(args) == 1:
            login = await server.challenge_auth("Username:")
        else:
            login = await self._decode(server, args[1])
            if login is None:
                return AuthResult(success=False, handled=True)
        if login is MISSING:
            return AuthResult(success=False, handled=True)
        password = await server.challenge_auth("Password:")
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        return await self._check(server, login, password)

    async def _decode(self, server, text):
        try:
            return b64decode(text.encode(), validate=True)
        except (binascii.Error, ValueError):
            await server.push("501 5.5.2 Cannot decode base64")
            return None

    async def _check(self, server, login, password):
        peer_ip = server.peer_ip
        username = login.decode("utf-8", errors="replace")
        blocked, _ = await self._count(
            server, auth_guard.blocked_for, peer_ip, username
        )
        if blocked:
            log.info("event=auth_blocked %s", server.who)
            return AuthResult(
                success=False, handled=False,
                message=(
                    f"454 4.7.0 Too many failed logins; try again in {blocked} seconds"
                ),
            )
        try:
            identity = await self._in_thread(
                _login, username, password.decode("utf-8"), peer_ip, self.policy
            )
        except UnicodeDecodeError:
            identity = None
        except Exception:
            log.exception("event=auth_error %s", server.who)
            return AuthResult(
                success=False, handled=False,
                message="454 4.7.0 Temporary authentication failure",
            )
        if identity is None:
            return await self._failed(server, username)
        if self.connections[identity.credential_id] >= identity.max_connections:
            log.info("event=too_many_connections %s username=%s", server.who,
                     identity.username)
            return AuthResult(
                success=False, handled=False,
                message=(
                    "454 4.7.0 Too many concurrent connections for this "
                    f"credential (limit {identity.max_connections})"
                ),
            )
        self.connections[identity.credential_id] += 1
        log.info("event=auth_ok %s username=%s", server.who, identity.username)
        return AuthResult(success=True, handled=False, auth_data=identity)

    async def _failed(self, server, username):
        peer_ip = server.peer_ip
        log.info("event=auth_failed %s", server.who)
        counted, ok = await self._count(
            server, auth_guard.record_failure, self.policy.guard, peer_ip, username
        )
        delay, blocked = counted if ok else (self.policy.guard.max_delay, [])
        try:
            await self._in_thread(
                _record_event, SecurityEvent.AUTH_FAILED, peer_ip, username
            )
            for subject in blocked:
                log.warning("event=auth_block_started %s subject=%s", server.who,
                            subject.partition(":")[0])
                await self._in_thread(
                    _record_event, SecurityEvent.AUTH_BLOCKED, peer_ip, username,
                    auth_guard.block_description(subject, self.policy.guard),
                )
        except Exception:
            log.exception("event=security_event_not_recorded %s", server.who)
        if delay:
            await asyncio.sleep(delay)
        return AuthResult(success=False, handled=False)

    async def handle_MAIL(self, server, session, envelope, address, params):
        identity = session.auth_data
        refusal = check_envelope_sender(address, identity.domains, identity.identities)
        if refusal:
            _log_refusal(server, "MAIL", refusal)
            return str(refusal)
        size = params.get("SIZE", 0)
        if size > identity.max_message_size:
            return (
                "552 5.3.4 Message size exceeds the limit of "
                f"{identity.max_message_size} octets for this credential"
            )
        if identity.limits:
            full, _ = await self._count(
                server, rate_limits.full_limit, identity.credential_id,
                identity.limits, size,
            )
            if full:
                return _rate_reply(full)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(self, server, session, envelope, address, params):
        limit = session.auth_data.max_recipients
        if len(envelope.rcpt_tos) >= limit:
            return f"452 4.5.3 Too many recipients (limit {limit} per message)"
        if not is_plausible_recipient(address):
            return "553 5.1.3 Recipient address is not a valid mailbox"
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server, session, envelope):
        identity = session.auth_data
        raw = envelope.original_content
        if has_bare_line_ending(raw):
            log.info("event=refused %s command=DATA reason=bare_line_ending",
                     server.who)
            return (
                "550 5.6.0 Message contains a bare CR or LF; lines must end "
                "with CRLF (RFC 5321 2.3.8)"
            )
        if has_overlong_line(raw):
            return LINE_TOO_LONG
        if len(raw) > identity.max_message_size:
            return (
                "552 5.3.4 Message size exceeds the limit of "
                f"{identity.max_message_size} octets for this credential"
            )
        # Before the header is parsed: the checks below and the DKIM signer
        # must read the same fields as the receivers do.
        refusal = check_message_syntax(raw)
        if refusal:
            _log_refusal(server, "DATA", refusal)
            return str(refusal)
        headers = parse_headers(raw)
        refusal = check_header_sender(headers, identity.domains, identity.identities)
        if refusal:
            _log_refusal(server, "DATA", refusal)
            return str(refusal)
        return await self._accept(server, identity, envelope, raw, headers)

    async def _accept(self, server, identity, envelope, raw, headers):
        try:
            full, queue_id = await self._in_thread(
                self._count_and_store, server.who, identity, envelope, raw, headers,
                server.peer_ip,
            )
        except Exception:
            log.exception("event=intake_failed %s", server.who)
            return TEMPORARY_FAILURE
        if full:
            return _rate_reply(full)
        log.info("event=accepted %s queue_id=%s size=%d rcpts=%d", server.who,
                 queue_id, len(raw), len(envelope.rcpt_tos))
        return f"250 2.0.0 Ok: queued as {queue_id}"

    def _count_and_store(self, who, identity, envelope, raw, headers, peer_ip):
        """Count the message against the credential's limits, then store and
        enqueue it, in one trip to the thread pool. Returns (full, None) when
        a limit is reached, else (None, queue_id)."""
        counted = False
        if identity.limits:
            full, counted = self._count_here(
                who, rate_limits.count_message, identity.credential_id,
                identity.limits, len(raw),
            )
            if full:
                return full, None
        try:
            return None, _store(identity, envelope, raw, headers, peer_ip)
        except Exception:
            if counted:
                self._count_here(
                    who, rate_limits.uncount_message, identity.credential_id,
                    identity.limits, len(raw),
                )
            raise
