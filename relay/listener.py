"""Running a small SMTP listener (the bounce listener, the development sink)
until SIGTERM or SIGINT. The submission gateway has its own, with a graceful
drain of transactions in flight."""

import asyncio
import logging
import signal


async def serve_until_stopped(session_factory, host, port, log=None):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(session_factory, host, port)
    (log or logging.getLogger(__name__)).info(
        "event=listening host=%s port=%s", host, port
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()
