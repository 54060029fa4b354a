"""Starting and stopping the submission listener."""

import asyncio
import logging
import signal
import ssl

from django.conf import settings

from smtp_gateway.handler import SubmissionHandler
from smtp_gateway.protocol import SubmissionSMTP

log = logging.getLogger("postern.gateway")


def tls_context(cert_file, key_file):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def session_factory(handler, context):
    def make_session():
        return SubmissionSMTP(
            handler,
            hostname=settings.GATEWAY_HOSTNAME,
            ident="Postern",
            tls_context=context,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            data_size_limit=settings.GATEWAY_MAX_MESSAGE_SIZE,
            enable_SMTPUTF8=True,
            decode_data=False,
        )

    return make_session


async def serve():
    context = tls_context(settings.TLS_CERT_FILE, settings.TLS_KEY_FILE)
    handler = SubmissionHandler(max_recipients=settings.GATEWAY_MAX_RECIPIENTS)
    host, port = settings.GATEWAY_SUBMISSION
    loop = asyncio.get_running_loop()
    server = await loop.create_server(session_factory(handler, context), host, port)
    log.info("event=listening host=%s port=%d mode=starttls", host, port)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    server.close()
    await server.wait_closed()
    handler.pool.shutdown(wait=True)
    log.info("event=stopped")
