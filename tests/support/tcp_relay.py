"""A TCP forwarder on loopback that a test can cut and restore, to make a
server (PostgreSQL) vanish from under a process and come back."""

import socket
import threading


class TCPRelay:
    def __init__(self, target_host, target_port, host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.host = host
        self.port = None
        self.listener = None
        self.connections = []
        self.lock = threading.Lock()

    def start(self):
        self.listener = socket.create_server((self.host, self.port or 0))
        self.port = self.listener.getsockname()[1]
        accept = threading.Thread(
            target=self._accept, args=(self.listener,), daemon=True
        )
        accept.start()
        return self

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source, sink):
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self):
        """Stop accepting and drop every open connection."""
        # shutdown() wakes the thread blocked in accept(); close() alone
        # does not, and that thread would go on accepting.
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for s in self.connections:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.connections.clear()

    def restore(self):
        return self.start()
