"""The gateway as a service: implicit TLS, TLS versions and ciphers,
certificate reload on SIGHUP, graceful shutdown on SIGTERM, timeouts, the
PROXY protocol, and what happens when the database goes away at DATA.

Tests that signal or starve a gateway start one of their own."""

import hashlib
import signal
import smtplib
import socket
import ssl
import struct
import subprocess
import sys

import pytest

from smtp_gateway.management.commands.make_dev_certificate import write_self_signed
from tests.support.clients import insecure_client_context, swaks
from tests.support.gateway import own_gateway, submissions  # noqa: F401 (a fixture)
from tests.support.processes import ROOT, free_port
from tests.support.raw_smtp import RawSMTP, authenticated
from tests.support.senders import make_sender
from tests.support.tcp_relay import TCPRelay
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BODY = (
    "From: <{sender}>\r\nTo: <a@customer.example.net>\r\nSubject: Hi\r\n\r\n"
    "Hello.\r\n"
)


@pytest.fixture
def sender(zone):
    return make_sender(zone)



def certificate_digest(host, port):
    with socket.create_connection((host, port), timeout=10) as raw:
        with insecure_client_context().wrap_socket(raw) as tls:
            return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def starttls_certificate_digest(endpoint):
    client = RawSMTP(endpoint.submission_host, endpoint.submission_port)
    try:
        client.command("EHLO client.example.net")
        client.starttls()
        return hashlib.sha256(client.sock.getpeercert(binary_form=True)).hexdigest()
    finally:
        client.close()


def test_implicit_tls_offers_auth_at_once_and_accepts_mail(gateway, sender):
    client = RawSMTP(gateway.submission_host, gateway.submissions_port,
                     implicit_tls=True)
    try:
        assert client.greeting.startswith("220 ")
        ehlo = client.command("EHLO client.example.net")
        assert "250-AUTH LOGIN PLAIN" in ehlo
        assert "STARTTLS" not in ehlo
        assert client.command("STARTTLS") == "503 5.5.1 TLS is already active"
    finally:
        client.close()

    with smtplib.SMTP_SSL(gateway.submission_host, gateway.submissions_port,
                          context=insecure_client_context(), timeout=10) as smtp:
        smtp.login(sender.username, sender.secret)
        smtp.sendmail(sender.address, ["a@customer.example.net"],
                      BODY.format(sender=sender.address))
    result = swaks(gateway.implicit, "--tls-on-connect", sender=sender.address,
                   to="b@customer.example.net", auth=(sender.username, sender.secret),
                   tls=False)
    assert result.returncode == 0, result.output
    assert submissions().count() == 2


def test_implicit_tls_without_auth_relays_nothing(gateway):
    client = RawSMTP(gateway.submission_host, gateway.submissions_port,
                     implicit_tls=True)
    try:
        client.command("EHLO client.example.net")
        assert client.command("MAIL FROM:<x@customer.example.net>") == (
            "530 5.7.0 Authentication required"
        )
    finally:
        client.close()


def tls_client(maximum=None, ciphers=None):
    context = insecure_client_context()
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    if maximum:
        context.maximum_version = maximum
    if ciphers:
        context.set_ciphers(ciphers)
    return context


@pytest.mark.parametrize("port_name", ["submission", "submissions"])
def test_old_tls_and_weak_ciphers_are_refused(gateway, port_name):
    def handshake(context):
        address = (gateway.submission_host, gateway.submissions_port)
        with socket.create_connection(address, timeout=10) as raw:
            with context.wrap_socket(raw) as tls:
                return tls.version(), tls.cipher()[0]

    if port_name == "submission":
        # The same context serves STARTTLS; checked through a real upgrade.
        client = RawSMTP(gateway.submission_host, gateway.submission_port)
        client.command("EHLO client.example.net")
        client.starttls(tls_client(maximum=ssl.TLSVersion.TLSv1_2))
        assert client.sock.version() == "TLSv1.2"
        assert "GCM" in client.sock.cipher()[0] or "CHACHA" in client.sock.cipher()[0]
        client.close()
        return

    assert handshake(tls_client())[0] == "TLSv1.3"
    version, cipher = handshake(tls_client(maximum=ssl.TLSVersion.TLSv1_2))
    assert version == "TLSv1.2" and cipher.startswith("ECDHE-")
    with pytest.raises(ssl.SSLError), pytest.warns(DeprecationWarning):
        handshake(tls_client(maximum=ssl.TLSVersion.TLSv1_1,
                             ciphers="ALL:@SECLEVEL=0"))
    with pytest.raises(ssl.SSLError):
        # CBC suites without AEAD are not offered.
        handshake(tls_client(maximum=ssl.TLSVersion.TLSv1_2,
                             ciphers="ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA"))


def test_sighup_reloads_the_certificate_without_dropping_sessions(own_gateway, run_dir,
                                                                 sender):
    cert, key = run_dir / "reload-cert.pem", run_dir / "reload-key.pem"
    write_self_signed(cert, key, hostname="old.example.test")
    started = own_gateway(POSTERN_TLS_CERT=str(cert), POSTERN_TLS_KEY=str(key))
    host, port = started.submission_host, started.submissions_port
    old = certificate_digest(host, port)
    assert starttls_certificate_digest(started) == old
    session = authenticated(started, sender)
    try:
        write_self_signed(cert, key, hostname="new.example.test")
        started.process.popen.send_signal(signal.SIGHUP)
        assert wait_until(lambda: certificate_digest(host, port) != old)
        assert starttls_certificate_digest(started) == certificate_digest(host, port)
        # The session that began before the reload goes on.
        assert session.command("NOOP") == "250 2.0.0 OK"

        new = certificate_digest(host, port)
        cert.write_text("not a certificate")
        started.process.popen.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "event=tls_reload_failed" in started.process.output())
        assert certificate_digest(host, port) == new
    finally:
        session.close()


def test_sigterm_finishes_the_transaction_in_flight(own_gateway, sender):
    started = own_gateway()
    busy = authenticated(started, sender)
    idle = authenticated(started, sender)
    try:
        busy.command(f"MAIL FROM:<{sender.address}>")
        busy.command("RCPT TO:<a@customer.example.net>")
        assert busy.command("DATA").startswith("354")
        busy.send(f"From: <{sender.address}>\r\nSubject: in flight\r\n\r\n")

        started.process.popen.send_signal(signal.SIGTERM)
        assert idle.reply() == "421 4.3.2 Service shutting down, try again later"

        def refused():
            try:
                socket.create_connection(
                    (started.submission_host, started.submission_port), timeout=1
                ).close()
            except OSError:
                return True
            return False

        assert wait_until(refused)
        # A new transaction pipelined behind the message is not begun.
        busy.send(f"Still being written.\r\n.\r\nMAIL FROM:<{sender.address}>\r\n")
        assert busy.reply().startswith("250 2.0.0 Ok: queued as")
        assert busy.reply() == "421 4.3.2 Service shutting down, try again later"
        assert started.process.popen.wait(timeout=20) == 0
    finally:
        busy.close()
        idle.close()
    assert submissions().get().subject == "in flight"


def test_idle_timeout_closes_with_421(own_gateway):
    started = own_gateway(POSTERN_SMTP_IDLE_TIMEOUT="1")
    idle = RawSMTP(started.submission_host, started.submission_port, timeout=10)
    try:
        assert idle.reply() == "421 4.4.2 Idle for too long, closing connection"
        assert idle.closed_by_server()
    finally:
        idle.close()


def test_session_time_limit_closes_with_421(own_gateway):
    started = own_gateway(POSTERN_SMTP_SESSION_TIMEOUT="1")
    client = RawSMTP(started.submission_host, started.submission_port, timeout=10)
    try:
        assert client.command("NOOP") == "250 2.0.0 OK"
        # The idle limit is 300 seconds here; only the session limit applies.
        assert client.reply() == "421 4.4.2 Session time limit reached"
        assert client.closed_by_server()
    finally:
        client.close()


def proxy_v2_header(source, destination, source_port, destination_port):
    signature = b"\r\n\r\n\x00\r\nQUIT\n"
    addresses = socket.inet_aton(source) + socket.inet_aton(destination)
    addresses += struct.pack("!HH", source_port, destination_port)
    # Version 2, PROXY command; AF_INET over STREAM.
    length = struct.pack("!H", len(addresses))
    return signature + bytes([0x21, 0x11]) + length + addresses


@pytest.mark.parametrize("version", [1, 2])
def test_proxy_protocol_gives_the_client_address(own_gateway, sender, version):
    started = own_gateway(POSTERN_PROXY_PROTOCOL="true", POSTERN_SUBMISSIONS_LISTEN="")
    client = RawSMTP(started.submission_host, started.submission_port, greeting=False)
    try:
        if version == 1:
            client.send("PROXY TCP4 192.0.2.44 127.0.0.1 40000 587\r\n")
        else:
            client.send(proxy_v2_header("192.0.2.44", "127.0.0.1", 40000, 587))
        assert client.reply().startswith("220 ")
        client.command("EHLO client.example.net")
        client.starttls()
        client.command("EHLO client.example.net")
        assert client.login(sender.username, sender.secret).startswith("235")
        client.command(f"MAIL FROM:<{sender.address}>")
        client.command("RCPT TO:<a@customer.example.net>")
        client.command("DATA")
        client.send(BODY.format(sender=sender.address) + ".\r\n")
        assert client.reply().startswith("250 2.0.0")
    finally:
        client.close()
    assert submissions().get().client_address == "192.0.2.44"

    without = RawSMTP(started.submission_host, started.submission_port, greeting=False)
    try:
        without.send("EHLO client.example.net\r\n")
        assert without.closed_by_server()
        assert b"250" not in without.buffer
    finally:
        without.close()


def test_proxy_protocol_with_implicit_tls_is_refused_at_start(gateway, run_dir):
    """The PROXY header comes before TLS, which the implicit-TLS listener
    cannot read yet: the gateway says so and does not start."""
    env = dict(gateway.env, POSTERN_PROXY_PROTOCOL="true",
               POSTERN_SUBMISSION_LISTEN=f"127.0.0.1:{free_port()}",
               POSTERN_SUBMISSIONS_LISTEN=f"127.0.0.1:{free_port()}")
    done = subprocess.run([sys.executable, "manage.py", "run_gateway"], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "POSTERN_PROXY_PROTOCOL cannot be used with POSTERN_SUBMISSIONS_LISTEN" in (
        done.stderr
    )


def test_database_gone_at_data_gives_451_and_stores_nothing(own_gateway, sender):
    from django.db import connection

    database = connection.settings_dict
    relay = TCPRelay(database["HOST"], int(database["PORT"])).start()
    url = (f"postgres://{database['USER']}@127.0.0.1:{relay.port}/{database['NAME']}")
    started = own_gateway(DATABASE_URL=url)
    client = authenticated(started, sender)
    try:
        client.command(f"MAIL FROM:<{sender.address}>")
        client.command("RCPT TO:<a@customer.example.net>")
        client.command("DATA")
        relay.cut()
        client.send(BODY.format(sender=sender.address) + ".\r\n")
        assert client.reply() == "451 4.3.0 Temporary failure, please try again later"
        assert client.command("NOOP") == "250 2.0.0 OK"
        assert submissions().count() == 0

        relay.restore()
        # A gateway thread whose database connection died in the cut finds
        # out on its next use and answers 451 once; a client tries again.
        replies = []
        while len(replies) < 5 and not replies[-1:] == ["250"]:
            client.command(f"MAIL FROM:<{sender.address}>")
            client.command("RCPT TO:<a@customer.example.net>")
            client.command("DATA")
            client.send(BODY.format(sender=sender.address) + ".\r\n")
            reply = client.reply()
            assert reply.startswith(("250 2.0.0 Ok: queued as", "451 4.3.0"))
            replies.append(reply[:3])
        assert replies[-1] == "250"
    finally:
        client.close()
        relay.cut()
    assert submissions().count() == 1
    assert submissions().get().recipients.count() == 1
