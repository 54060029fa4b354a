"""The SMTP listener for the return-path domain: it takes asynchronous
bounces and complaints for bounces+QUEUEID@POSTERN_RETURN_PATH_DOMAIN and
hands them to relay.bounces. It needs no AUTH: it accepts nothing but
reports on our own messages, and relays nothing."""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from aiosmtpd.smtp import SMTP
from django.conf import settings
from django.db import connection

from relay import bounces
from relay.listener import serve_until_stopped

log = logging.getLogger("postern.bounce_listener")

# Reports are small; a large one is not a report of ours.
MAX_REPORT_SIZE = 2 * 1024 * 1024


class BounceHandler:
    def __init__(self):
        self.pool = ThreadPoolExecutor(max_workers=4)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if bounces.queue_id_from(address) is None:
            return "550 5.1.1 No such mailbox here"
        if envelope.rcpt_tos:
            # One report, one message: keeps take_report simple.
            return "452 4.5.3 One recipient per report, please"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(
                self.pool, _take, envelope.rcpt_tos[0], raw
            )
        except Exception:
            log.exception("event=report_failed")
            return "451 4.3.0 Temporary problem; try again later"
        log.info("event=report_taken outcome=%r", outcome[:200])
        return "250 2.0.0 Report taken"


def _take(rcpt_to, raw):
    # Reports are few: a connection per report keeps no idle ones open in
    # the pool's threads.
    try:
        return bounces.take_report(rcpt_to, raw)
    finally:
        connection.close()


async def serve():
    host, port = settings.BOUNCE_LISTEN
    handler = BounceHandler()
    await serve_until_stopped(
        lambda: SMTP(
            handler,
            hostname=settings.GATEWAY_HOSTNAME,
            ident="Postern",
            data_size_limit=MAX_REPORT_SIZE,
            decode_data=False,
        ),
        host,
        port,
        log,
    )
