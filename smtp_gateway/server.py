"""Starting and stopping the submission listeners.

Signals: SIGHUP loads the certificate and key again (new connections get
them, sessions in progress keep theirs); SIGTERM or SIGINT stops accepting,
lets transactions in flight finish for up to the shutdown grace, closes idle
sessions with 421, then exits.
"""

import asyncio
import logging
import signal
from asyncio import sslproto

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from smtp_gateway.auth_guard import GuardPolicy
from smtp_gateway.counters import make_counters
from smtp_gateway.handler import GatewayPolicy, SubmissionHandler
from smtp_gateway.protocol import SHUTDOWN_REPLY, SubmissionSMTP
from smtp_gateway.tls import reload_certificate, tls_context

log = logging.getLogger("postern.gateway")


def gateway_policy():
    return GatewayPolicy(
        max_message_size=settings.GATEWAY_MAX_MESSAGE_SIZE,
        max_recipients=settings.GATEWAY_MAX_RECIPIENTS,
        max_connections=settings.GATEWAY_MAX_CONNECTIONS,
        default_limits=settings.GATEWAY_DEFAULT_LIMITS,
        guard=GuardPolicy(
            window=settings.GATEWAY_AUTH_WINDOW,
            slow_after=settings.GATEWAY_AUTH_SLOW_AFTER,
            block_after=settings.GATEWAY_AUTH_BLOCK_AFTER,
            block_seconds=settings.GATEWAY_AUTH_BLOCK_SECONDS,
            max_delay=settings.GATEWAY_AUTH_MAX_DELAY,
        ),
    )


def session_factory(handler, context, sessions, implicit_tls):
    def make_session():
        return SubmissionSMTP(
            handler,
            sessions=sessions,
            implicit_tls=implicit_tls,
            session_limit=settings.GATEWAY_SESSION_TIMEOUT,
            hostname=settings.GATEWAY_HOSTNAME,
            ident="Postern",
            tls_context=None if implicit_tls else context,
            require_starttls=not implicit_tls,
            auth_required=True,
            auth_require_tls=True,
            data_size_limit=settings.GATEWAY_MAX_MESSAGE_SIZE,
            enable_SMTPUTF8=True,
            decode_data=False,
            timeout=settings.GATEWAY_IDLE_TIMEOUT,
            proxy_protocol_timeout=10 if settings.GATEWAY_PROXY_PROTOCOL else None,
        )

    return make_session


async def start_listeners(handler, context, sessions):
    loop = asyncio.get_running_loop()
    listeners = []
    host, port = settings.GATEWAY_SUBMISSION
    factory = session_factory(handler, context, sessions, implicit_tls=False)
    listeners.append(await loop.create_server(factory, host, port))
    log.info("event=listening host=%s port=%d mode=starttls", host, port)
    if settings.GATEWAY_SUBMISSIONS:
        if settings.GATEWAY_PROXY_PROTOCOL:
            # A load balancer sends the PROXY header before the TLS handshake,
            # and this listener starts TLS before reading anything. Known
            # limit: put the implicit-TLS port behind PROXY only once the
            # handshake is started by the session itself.
            raise ImproperlyConfigured(
                "POSTERN_PROXY_PROTOCOL cannot be used with "
                "POSTERN_SUBMISSIONS_LISTEN yet; terminate port 465 at the "
                "balancer or leave it empty"
            )
        host, port = settings.GATEWAY_SUBMISSIONS
        factory = session_factory(handler, context, sessions, implicit_tls=True)
        listeners.append(
            await loop.create_server(
                factory, host, port, ssl=context, ssl_handshake_timeout=30
            )
        )
        log.info("event=listening host=%s port=%d mode=implicit_tls", host, port)
    return listeners


async def drain(sessions, grace):
    """Close sessions as they fall idle; after the grace, close the rest."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    def open_sessions():
        # A closing TLS session may wait for the client's close_notify; it
        # has nothing left to finish.
        return [session for session in sessions if not session.closing]

    while open_sessions() and loop.time() < deadline:
        for session in open_sessions():
            if not session.in_transaction:
                session.close_with(SHUTDOWN_REPLY)
        await asyncio.sleep(0.05)
    for session in open_sessions():
        log.warning("event=transaction_cut %s", session.who)
        session.close_with(SHUTDOWN_REPLY)


# asyncio gives every TLS connection a read buffer of SSLProtocol.max_size,
# 256 KiB, filled with zeros up front: a gateway holding a thousand mostly
# idle sessions kept 290 KiB each (bench/, idle scenario). A TLS record
# carries at most 16 KiB (RFC 8446 section 5.1), so 32 KiB costs nothing but
# more reads of a large message.
TLS_READ_BUFFER = 32 * 1024


async def serve():
    sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
    context = tls_context(settings.TLS_CERT_FILE, settings.TLS_KEY_FILE)
    counters = make_counters(settings.GATEWAY_COUNTERS_URL)
    handler = SubmissionHandler(gateway_policy(), counters)
    sessions = set()
    listeners = await start_listeners(handler, context, sessions)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(
        signal.SIGHUP, reload_certificate, context, settings.TLS_CERT_FILE,
        settings.TLS_KEY_FILE,
    )
    await stop.wait()

    log.info("event=stopping sessions=%d", len(sessions))
    handler.stopping = True
    for listener in listeners:
        listener.close()
    await drain(sessions, settings.GATEWAY_SHUTDOWN_GRACE)
    handler.pool.shutdown(wait=True)
    log.info("event=stopped")
