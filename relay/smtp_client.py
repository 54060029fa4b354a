"""One outbound SMTP session: deliver one message to recipients at one host."""

import smtplib
import ssl
from dataclasses import dataclass, field


@dataclass
class Reply:
    code: int
    text: str

    @property
    def accepted(self):
        return 200 <= self.code < 300

    @property
    def permanent(self):
        return 500 <= self.code < 600

    def __str__(self):
        return f"{self.code} {self.text}"


@dataclass
class SessionResult:
    replies: dict = field(default_factory=dict)  # recipient address -> Reply
    tls_version: str = ""


class ConnectionProblem(Exception):
    """The session could not be had or broke off: a temporary failure."""


def _opportunistic_tls():
    # Opportunistic TLS (RFC 7435): encrypt whenever offered, without
    # authenticating the server, since a failed check would only fall back to
    # clear text. Enforced, verified TLS is a per-destination policy.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _text(raw):
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def deliver(hop, helo, mail_from, recipients, data, timeout):
    """Send data to recipients at hop; returns each recipient's final reply.

    Raises ConnectionProblem when the session breaks before the reply to the
    end of data: then no recipient has the message, or (if the break came
    after the server took the data but before it answered) one may have it
    and a retry sends it again; RFC 1047 describes that window.
    """
    result = SessionResult()
    smtp = smtplib.SMTP(timeout=timeout, local_hostname=helo)
    try:
        code, text = smtp.connect(hop.address, hop.port)
        if code != 220:
            return _all(result, recipients, Reply(code, _text(text)))
        smtp.ehlo()
        if smtp.has_extn("starttls"):
            smtp.starttls(context=_opportunistic_tls())
            result.tls_version = smtp.sock.version() or ""
            smtp.ehlo()

        options = ["BODY=8BITMIME"] if smtp.has_extn("8bitmime") else []
        code, text = smtp.mail(mail_from, options)
        if code != 250:
            return _all(result, recipients, Reply(code, _text(text)))

        accepted = []
        for rcpt in recipients:
            code, text = smtp.rcpt(rcpt)
            result.replies[rcpt] = Reply(code, _text(text))
            if 200 <= code < 300:
                accepted.append(rcpt)
        if accepted:
            try:
                code, text = smtp.data(data)
            except smtplib.SMTPDataError as refused:  # DATA itself refused
                code, text = refused.smtp_code, refused.smtp_error
            for rcpt in accepted:
                result.replies[rcpt] = Reply(code, _text(text))
    except (smtplib.SMTPException, OSError) as exc:
        raise ConnectionProblem(f"{type(exc).__name__}: {exc}") from exc
    finally:
        _close(smtp)
    return result


def _close(smtp):
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def _all(result, recipients, reply):
    result.replies = {rcpt: reply for rcpt in recipients}
    return result
