"""SMTP clients for tests: swaks (a real, independent client) and smtplib."""

import shutil
import smtplib
import ssl
import subprocess
from dataclasses import dataclass


@dataclass
class SwaksResult:
    returncode: int
    output: str


def swaks(
    stack,
    *args,
    sender,
    to,
    auth=None,
    tls=True,
    body="Invoice 1042 is attached.",
    headers=(),
):
    """Submit through the gateway with swaks; auth is (username, secret)."""
    assert shutil.which("swaks"), "swaks is not installed (apt-get install swaks)"
    command = [
        "swaks",
        "--server",
        stack.submission_host,
        "--port",
        str(stack.submission_port),
        "--from",
        sender,
        "--to",
        to,
        "--body",
        body,
        "--timeout",
        "20",
    ]
    if tls:
        command.append("--tls")
    if auth:
        command += [
            "--auth",
            "PLAIN",
            "--auth-user",
            auth[0],
            "--auth-password",
            auth[1],
        ]
    for header in headers:
        command += ["--header", header]
    command += list(args)
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    return SwaksResult(done.returncode, done.stdout + done.stderr)


def insecure_client_context():
    # The gateway's test certificate is self-signed.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def smtp_session(stack, starttls=True, login=None):
    client = smtplib.SMTP(stack.submission_host, stack.submission_port, timeout=20)
    client.ehlo("client.example.net")
    if starttls:
        client.starttls(context=insecure_client_context())
        client.ehlo("client.example.net")
    if login:
        client.login(*login)
    return client
