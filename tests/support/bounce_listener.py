"""Running relay.bounce_listener's server on a free loopback port for the
length of a test. The loop lives in its own thread from start to end: the
test thread may already have one registered (the browser fixture's)."""

import asyncio
import contextlib
import threading

from aiosmtpd.smtp import SMTP

from relay.bounce_listener import MAX_REPORT_SIZE, BounceHandler


@contextlib.contextmanager
def running_bounce_listener(host="127.0.0.1"):
    ready = threading.Event()
    state = {}

    def run():
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
        state.update(loop=loop, port=server.sockets[0].getsockname()[1])
        ready.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10), "the bounce listener did not start"
    try:
        yield host, state["port"]
    finally:
        state["loop"].call_soon_threadsafe(state["loop"].stop)
        thread.join(10)
