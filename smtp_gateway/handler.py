"""What the gateway does at each SMTP command: cheap checks, then a durable
commit, then the pipeline is enqueued. Database work runs in a thread pool so
that one slow query never stalls the other sessions on the event loop."""

import asyncio
import binascii
import logging
from base64 import b64decode
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiosmtpd.smtp import MISSING, AuthResult
from django import db

from policies.sender import (
    Refusal,
    check_envelope_sender,
    check_header_sender,
    is_plausible_recipient,
    parse_headers,
    verified_domain_names,
)
from relay.intake import accept_message, enqueue_processing
from tenants.credentials import authenticate

log = logging.getLogger("postern.gateway")

TEMPORARY_FAILURE = "451 4.3.0 Temporary failure, please try again later"


@dataclass(frozen=True)
class Identity:
    """Who authenticated on a session; the gateway's snapshot at AUTH time."""

    credential_id: int
    tenant_id: int
    username: str
    domains: frozenset


def _peer_ip(session):
    peer = session.peer
    return peer[0] if isinstance(peer, tuple) else None


def _log_refusal(session, command, refusal):
    log.info("event=refused peer=%s command=%s reply=%r", _peer_ip(session), command,
             str(refusal))


def _login(username, password, peer_ip):
    db.close_old_connections()
    credential = authenticate(username, password, peer_ip)
    if credential is None:
        return None
    return Identity(
        credential_id=credential.id,
        tenant_id=credential.tenant_id,
        username=credential.username,
        domains=verified_domain_names(credential.tenant_id),
    )


def _store(identity, envelope, raw, headers, peer_ip):
    db.close_old_connections()
    message = accept_message(
        tenant_id=identity.tenant_id,
        credential_id=identity.credential_id,
        mail_from=envelope.mail_from,
        rcpt_tos=list(envelope.rcpt_tos),
        raw=raw,
        headers=headers,
        client_address=peer_ip,
    )
    enqueue_processing(message)
    return message.queue_id


class SubmissionHandler:
    def __init__(self, max_recipients, workers=8):
        self.max_recipients = max_recipients
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gw-db")

    async def _in_thread(self, func, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, func, *args)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        final = responses.pop()  # "250 HELP"
        responses += ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", final]
        return responses

    async def handle_VRFY(self, server, session, envelope, address):
        # Address verification tells an attacker which mailboxes exist.
        return "502 5.5.1 VRFY is disabled"

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
        peer_ip = _peer_ip(server.session)
        try:
            identity = await self._in_thread(
                _login, login.decode("utf-8"), password.decode("utf-8"), peer_ip
            )
        except UnicodeDecodeError:
            identity = None
        except Exception:
            log.exception("event=auth_error peer=%s", peer_ip)
            return AuthResult(
                success=False, handled=False,
                message="454 4.7.0 Temporary authentication failure",
            )
        if identity is None:
            log.info("event=auth_failed peer=%s", peer_ip)
            return AuthResult(success=False, handled=False)
        log.info("event=auth_ok peer=%s username=%s", peer_ip, identity.username)
        return AuthResult(success=True, handled=False, auth_data=identity)

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        identity = session.auth_data
        refusal = check_envelope_sender(address, identity.domains)
        if refusal:
            _log_refusal(session, "MAIL", refusal)
            return str(refusal)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return "452 4.5.3 Too many recipients"
        if not is_plausible_recipient(address):
            return "553 5.1.3 Recipient address is not a valid mailbox"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content
        headers = parse_headers(raw)
        refusal = check_header_sender(headers, session.auth_data.domains)
        if refusal:
            _log_refusal(session, "DATA", refusal)
            return str(refusal)
        peer_ip = _peer_ip(session)
        try:
            queue_id = await self._in_thread(
                _store, session.auth_data, envelope, raw, headers, peer_ip
            )
        except Exception:
            log.exception("event=intake_failed peer=%s", peer_ip)
            return TEMPORARY_FAILURE
        log.info("event=accepted peer=%s queue_id=%s size=%d rcpts=%d", peer_ip,
                 queue_id, len(raw), len(envelope.rcpt_tos))
        return f"250 2.0.0 Ok: queued as {queue_id}"
