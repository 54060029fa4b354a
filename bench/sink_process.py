"""The benchmark's recipient MX in a process of its own, so that it does not
share an interpreter lock with the load generator.

Run as `python -m bench.sink_process PORT STATUS_FILE`. It prints "ready",
then rewrites STATUS_FILE with the running count several times a second; on
SIGTERM it writes, once, the arrival time of every message.
"""

import json
import os
import signal
import sys
import threading

from tests.support.sink import Sink


def write_status(path, sink, final):
    arrivals = sink.snapshot()
    status = {"messages": len(arrivals), "recipients": sum(arrivals.values()),
              "signed": sink.signed, "final": final}
    if final:
        status["arrivals"] = dict(arrivals)
        status["arrived_at"] = dict(sink.arrived_at)
    temporary = f"{path}.tmp"
    with open(temporary, "w") as out:
        json.dump(status, out)
    os.replace(temporary, path)


def main(port, status_path):
    sink = Sink("127.0.0.1", port).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    while not stop.wait(0.2):
        write_status(status_path, sink, final=False)
    sink.stop()
    write_status(status_path, sink, final=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
