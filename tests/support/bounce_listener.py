"""Running relay.bounce_listener's server in a thread, on a free loopback
port, for the length of a test."""

import asyncio
import contextlib
import threading

from aiosmtpd.smtp import SMTP

from relay.bounce_listener import MAX_REPORT_SIZE, BounceHandler


@contextlib.contextmanager
def running_bounce_listener(host="127.0.0.1"):
    loop = asyncio.new_event_loop()
    handler = BounceHandler()
    server = loop.run_until_complete(
        loop.create_server(
            lambda: SMTP(
                handler,
                hostname="bounces.postern.test",
                data_size_limit=MAX_REPORT_SIZE,
                decode_data=False,
            ),
            host=host,
            port=0,
        )
    )
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield host, port
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()
