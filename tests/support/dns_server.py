"""An authoritative DNS server for tests, on loopback, whose records a test
can change while it runs.

It answers every name it holds, NXDOMAIN for any other name, and never
recurses. A name in `silent` gets no answer at all, to test time-outs.
Answers for a name in `authenticated` carry the AD bit, as a validating
resolver's would for a DNSSEC-signed zone (no signatures are served).
"""

import socketserver
import struct
import threading

from dnslib import AAAA, MX, QTYPE, RCODE, RR, TLSA, TXT, A, DNSLabel, DNSRecord


def _key(name):
    return str(DNSLabel(name)).lower()


class Zone:
    def __init__(self):
        self.records = {}  # (name, qtype) -> [RR]
        self.silent = set()
        self.authenticated = set()
        self.lock = threading.Lock()

    def add(self, name, rtype, rdata, ttl=60):
        rr = RR(DNSLabel(name), getattr(QTYPE, rtype), rdata=rdata, ttl=ttl)
        with self.lock:
            self.records.setdefault((_key(name), rtype), []).append(rr)

    def add_a(self, name, address):
        self.add(
            name,
            "AAAA" if ":" in address else "A",
            AAAA(address) if ":" in address else A(address),
        )

    def add_mx(self, name, exchange, preference=10):
        self.add(name, "MX", MX(exchange, preference))

    def add_txt(self, name, value):
        """value: one string (split into 255-octet strings) or a list of strings."""
        if isinstance(value, str):
            raw = value.encode()
            value = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
        self.add(
            name, "TXT", TXT([v if isinstance(v, bytes) else v.encode() for v in value])
        )

    def add_tlsa(self, name, usage, selector, matching_type, data):
        self.add(name, "TLSA", TLSA(usage, selector, matching_type, data))

    def remove(self, name, rtype=None):
        with self.lock:
            for key in list(self.records):
                if key[0] == _key(name) and rtype in (None, key[1]):
                    del self.records[key]

    def answer(self, request):
        qname = _key(request.q.qname)
        qtype = QTYPE[request.q.qtype]
        reply = request.reply()
        with self.lock:
            rrs = list(self.records.get((qname, qtype), []))
            known = any(key[0] == qname for key in self.records)
        for rr in rrs:
            reply.add_answer(rr)
        # dnslib's reply copies the query's flags, AD included; a server
        # sets AD only where it has validated (RFC 4035 section 3.2.3).
        reply.header.ad = int(qname in {_key(n) for n in self.authenticated})
        if not rrs and not known:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply

    def is_silent(self, request):
        return _key(request.q.qname) in {_key(n) for n in self.silent}


class _UDPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        reply = self.server.reply_to(data)
        if reply is not None:
            sock.sendto(reply, self.client_address)


class _TCPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        header = self.request.recv(2)
        if len(header) < 2:
            return
        (length,) = struct.unpack("!H", header)
        data = b""
        while len(data) < length:
            chunk = self.request.recv(length - len(data))
            if not chunk:
                return
            data += chunk
        reply = self.server.reply_to(data)
        if reply is not None:
            self.request.sendall(struct.pack("!H", len(reply)) + reply)


class _Mixin:
    zone = None

    def reply_to(self, data):
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return None
        if self.zone.is_silent(request):
            return None
        return self.zone.answer(request).pack()


class _UDPServer(_Mixin, socketserver.ThreadingUDPServer):
    daemon_threads = True
    allow_reuse_address = True


class _TCPServer(_Mixin, socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class DNSServer:
    """UDP and TCP on one loopback port."""

    def __init__(self, host="127.0.0.1", port=0):
        self.zone = Zone()
        self.host = host
        self.udp, self.tcp = self._bind_pair(host, port)
        self.port = self.udp.server_address[1]
        self.udp.zone = self.tcp.zone = self.zone

    @staticmethod
    def _bind_pair(host, port, tries=20):
        # A free UDP port may be taken for TCP by another process; pick again.
        for _ in range(tries):
            udp = _UDPServer((host, port), _UDPHandler)
            try:
                return udp, _TCPServer((host, udp.server_address[1]), _TCPHandler)
            except OSError:
                udp.server_close()
                if port:
                    raise
        raise OSError(f"no port free for both UDP and TCP on {host}")

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    def start(self):
        for server in (self.udp, self.tcp):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        for server in (self.udp, self.tcp):
            server.shutdown()
            server.server_close()
