"""Outbound SMTP: one session with one remote host, over which several
messages can be sent one after another (RFC 5321 section 3.3)."""

import re
import smtplib
import ssl
from dataclasses import dataclass, field

from relay import dane


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
class TransactionResult:
    replies: dict = field(default_factory=dict)  # recipient address -> Reply


class ConnectionProblem(Exception):
    """The session could not be had or broke off: a temporary failure."""

    status = "4.4.2"
    # What was known all the same when the session broke, [(tag,
    # TransactionResult)]; a result may cover only the recipients refused
    # before the break (see Session._broken).
    completed = ()


class TLSProblem(ConnectionProblem):
    """The TLS that the destination requires could not be had. Nothing was
    sent in clear."""

    def __init__(self, status, text):
        super().__init__(text)
        self.status = status


@dataclass(frozen=True)
class TLSRequirement:
    """What TLS a session must have. required: never go on in clear.
    verify_hostname: the certificate must be valid for this name.
    tlsa: usable DANE records (RFC 7672); the certificate must match one of
    them instead of being checked against a CA.
    unauthenticated: required TLS whose certificate is not checked, as
    RFC 7672 section 2.2 asks when all of a host's TLSA records are unusable.
    refusal: why the hop must not be used at all (a failed TLSA lookup)."""

    required: bool = False
    verify_hostname: str = ""
    ca_file: str = ""
    reason: str = ""
    tlsa: tuple = ()
    unauthenticated: bool = False
    refusal: str = ""

    def context(self):
        if self.required and not (self.tlsa or self.unauthenticated):
            return _verifying_context(self.ca_file)
        # DANE's check comes after the handshake, against the TLSA records.
        return _opportunistic_context()


OPPORTUNISTIC = TLSRequirement()


def _opportunistic_context():
    # Opportunistic TLS (RFC 7435): encrypt whenever offered, without
    # authenticating the server, since a failed check would only fall back to
    # clear text.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _verifying_context(ca_file):
    context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _peer_chain(sock):
    """The DER certificates the server sent, leaf first. ssl makes this
    public only from Python 3.13 (get_unverified_chain); before that the
    same method sits on the private _sslobj. Without it only the leaf is
    known, which is enough for DANE-EE but not DANE-TA."""
    public = getattr(sock, "get_unverified_chain", None)
    if public is not None:
        return list(public() or [])
    private = getattr(getattr(sock, "_sslobj", None), "get_unverified_chain", None)
    if private is not None:
        return [cert.public_bytes(ssl._ssl.ENCODING_DER) for cert in private() or []]
    leaf = sock.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _text(raw):
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


_LINE_END = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


def prepare_data(data):
    """CRLF line ends, dot-stuffing (RFC 5321 section 4.5.2) and the end of
    data mark."""
    data = _LINE_END.sub(b"\r\n", bytes(data))
    data = _LEADING_DOT.sub(b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


_XTEXT_PLAIN = {c for c in range(33, 127)} - {ord("+"), ord("=")}


def xtext(value):
    """RFC 3461 section 4: printable ASCII except "+" and "=", else +HH."""
    return "".join(
        chr(b) if b in _XTEXT_PLAIN else f"+{b:02X}" for b in value.encode("utf-8")
    )


class Session:
    """An open SMTP session with one hop. Use as a context manager."""

    def __init__(
        self,
        hop,
        helo,
        timeout,
        source_address=None,
        tls=OPPORTUNISTIC,
        data_timeout=600,
    ):
        self.hop = hop
        self.timeout, self.data_timeout = timeout, data_timeout
        self.tls_version = ""
        self._smtp = smtplib.SMTP(
            timeout=timeout,
            local_hostname=helo,
            source_address=(source_address, 0) if source_address else None,
        )
        self._tls = tls
        self.greeting = None
        # (tag, result, accepted) of a message whose end-of-data reply is
        # still to be read (see send()).
        self._unanswered = None
        self._done = []  # [(tag, result)] completed, not yet returned
        self.transactions = 0  # begun over this session

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def open(self):
        """Connect, greet and start TLS as required. Returns None, or the
        Reply when the server turned the session down in its greeting."""
        if self._tls.refusal:
            raise TLSProblem("4.7.5", self._tls.refusal)
        try:
            greeting = _reply(self._smtp.connect(self.hop.address, self.hop.port))
            if greeting.code != 220:
                return greeting
            self._smtp.ehlo()
            self._start_tls()
        except TLSProblem:
            raise
        except (smtplib.SMTPException, OSError) as exc:
            raise ConnectionProblem(_describe(exc)) from exc
        return None

    def _start_tls(self):
        smtp = self._smtp
        if not smtp.has_extn("starttls"):
            if self._tls.required:
                # X.7.10: encryption needed (RFC 5248 registry).
                raise TLSProblem("4.7.10", f"no STARTTLS offered; {self._tls.reason}")
            return
        context = self._tls.context()
        code, text = smtp.docmd("STARTTLS")
        if code != 220:
            if self._tls.required:
                raise TLSProblem("4.7.10", f"STARTTLS refused: {code} {_text(text)}")
            return
        try:
            # smtplib's own starttls() would check the certificate against the
            # address connected to; the name that counts is the MX host's
            # (RFC 7672 section 3.2.2 and RFC 8461 section 4.1 both use it).
            smtp.sock = context.wrap_socket(
                smtp.sock, server_hostname=self._tls.verify_hostname or self.hop.host
            )
        except ssl.SSLCertVerificationError as exc:
            raise TLSProblem("4.7.5", f"certificate not accepted: {exc.verify_message}")
        except (ssl.SSLError, OSError) as exc:
            if self._tls.required:
                raise TLSProblem("4.7.5", f"TLS failed: {_describe(exc)}")
            # Known limit: an opportunistic handshake that fails is not tried
            # again in clear; the hop counts as failed and the next is tried.
            raise
        if self._tls.tlsa:
            self._check_tlsa()
        # After STARTTLS the client forgets what it knew (RFC 3207 section
        # 4.2) and greets again.
        smtp.file = None
        smtp.helo_resp = smtp.ehlo_resp = None
        smtp.esmtp_features = {}
        smtp.does_esmtp = False
        self.tls_version = smtp.sock.version() or ""
        smtp.ehlo()

    def _check_tlsa(self):
        """RFC 7672 section 3: the chain must match a usable TLSA record, or
        the session ends before any mail is sent."""
        chain = _peer_chain(self._smtp.sock)
        if not dane.chain_matches(self._tls.tlsa, chain, self.hop.host):
            raise TLSProblem("4.7.5", f"certificate does not match; {self._tls.reason}")

    def supports(self, extension):
        return self._smtp.has_extn(extension)

    def send(self, mail_from, mail_options, recipients, data, before_end_of_data,
             tag=None):
        """One mail transaction. recipients: [(address, rcpt_options)].

        Returns [(tag, TransactionResult)] for the transactions this call
        completed, in order. With PIPELINING the reply to this message's end
        of data is not waited for here: it is read after the next message's
        envelope has been written (RFC 2920 section 3.1 lets message content
        start a group of commands), by the next send() or by finish(), so one
        round trip serves two messages. Without PIPELINING each call
        completes its own transaction.

        before_end_of_data(accepted) runs after the server said 354 and right
        before the message and its end mark are written; see
        delivery.mark_data_sent for why. When it returns False the message is
        not sent, the connection is dropped and the result is None.

        Raises ConnectionProblem when the session breaks; a transaction whose
        result was not returned may then have been delivered or not.
        """
        addresses = [address for address, _ in recipients]
        result = TransactionResult()
        self.transactions += 1
        known = None  # (tag, result, accepted) once the RCPT replies are in
        try:
            try:
                mail, rcpts, data_reply = self._send_envelope(
                    mail_from, mail_options, recipients
                )
            except UnicodeEncodeError:
                # A non-ASCII address for a server without SMTPUTF8: nothing
                # was sent for the command; RFC 6531 section 3.2 says bounce.
                self._read_unanswered()
                self._reset()
                text = "5.6.7 The receiving server does not support SMTPUTF8"
                reply = Reply(553, text)
                self._done.append((tag, _all(result, addresses, reply)))
                return self._take_done()

            accepted = [a for a, reply in zip(addresses, rcpts) if reply.accepted]
            if mail.code != 250 or not accepted or data_reply.code != 354:
                self._end_refused(data_reply)
                refused = _refused(result, addresses, mail, rcpts, accepted, data_reply)
                self._done.append((tag, refused))
                return self._take_done()
            result.replies = dict(zip(addresses, rcpts))
            known = (tag, result, accepted)
            if before_end_of_data(accepted) is False:
                # The caller may not send this message after all. After 354
                # only the end of data or a dropped connection ends the
                # transaction (RFC 5321 section 4.1.1.4): drop it.
                self._smtp.close()
                self._done.append((tag, None))
                return self._take_done()
            self._smtp.send(prepare_data(data))
        except ConnectionProblem as problem:
            raise self._broken(problem, known)
        except (smtplib.SMTPException, OSError) as exc:
            raise self._broken(exc, known) from exc
        self._unanswered = known
        if not self._smtp.has_extn("pipelining"):
            self._read_unanswered()
        return self._take_done()

    def finish(self):
        """[(tag, TransactionResult)] for the transaction whose end of data is
        still unanswered, once its reply is read; [] when there is none."""
        self._read_unanswered()
        return self._take_done()

    def _read_unanswered(self):
        if self._unanswered is None:
            return
        tag, result, accepted = unanswered = self._unanswered
        self._unanswered = None
        smtp = self._smtp
        try:
            smtp.sock.settimeout(self.data_timeout)
            reply = _reply(smtp.getreply())
            smtp.sock.settimeout(self.timeout)
        except ConnectionProblem as problem:
            raise self._broken(problem, unanswered)
        except (smtplib.SMTPException, OSError) as exc:
            raise self._broken(exc, unanswered) from exc
        for address in accepted:
            result.replies[address] = reply
        self._done.append((tag, result))

    def _take_done(self):
        done, self._done = self._done, []
        return done

    def _broken(self, exc, known):
        """The ConnectionProblem for a session that broke, carrying what is
        known all the same: transactions completed before the break, and the
        refusals of the one in hand (a recipient refused at RCPT stays
        refused whatever happened to the data)."""
        problem = exc if isinstance(exc, ConnectionProblem) else None
        problem = problem or ConnectionProblem(_describe(exc))
        completed = self._take_done()
        if known is not None:
            tag, result, accepted = known
            refused = {a: r for a, r in result.replies.items() if a not in accepted}
            if refused:
                completed.append((tag, TransactionResult(refused)))
        problem.completed = [*problem.completed, *completed]
        return problem

    def _send_envelope(self, mail_from, mail_options, recipients):
        """Send MAIL, the RCPTs and DATA. Returns (MAIL reply, RCPT replies,
        DATA reply); what was not sent has no reply (None or missing)."""
        smtp = self._smtp
        if not smtp.has_extn("pipelining"):
            return self._envelope_in_turn(mail_from, mail_options, recipients)
        # All in one write; the replies are read in order after it: first the
        # previous message's end of data, then these.
        commands = _envelope_commands(mail_from, mail_options, recipients)
        smtp.send(commands)
        self._read_unanswered()
        mail = _reply(smtp.getreply())
        rcpts = [_reply(smtp.getreply()) for _ in recipients]
        return mail, rcpts, _reply(smtp.getreply())

    def _envelope_in_turn(self, mail_from, mail_options, recipients):
        """MAIL, each RCPT and DATA, each waiting for its reply; stops at the
        first reply that ends the transaction."""
        smtp = self._smtp
        mail = _reply(smtp.mail(mail_from, mail_options))
        if mail.code != 250:
            return mail, [], None
        rcpts = [
            _reply(smtp.rcpt(address, options))
            for address, options in recipients
        ]
        if not any(reply.accepted for reply in rcpts):
            return mail, rcpts, None
        return mail, rcpts, _reply(smtp.docmd("DATA"))

    def _end_refused(self, data_reply):
        if data_reply is not None and data_reply.code == 354:
            # RFC 2920 section 3.1: a server that said 354 although no
            # recipient was taken is sent an empty message.
            self._smtp.send(b".\r\n")
            _reply(self._smtp.getreply())
        self._reset()

    def _reset(self):
        try:
            code, text = self._smtp.rset()
        except (smtplib.SMTPException, OSError) as exc:
            raise ConnectionProblem(_describe(exc)) from exc
        if code != 250:
            raise ConnectionProblem(f"RSET refused: {code} {_text(text)}")

    def close(self):
        try:
            self._smtp.quit()
        except (smtplib.SMTPException, OSError):
            self._smtp.close()

    def abandon(self):
        """Close the connection without QUIT: after a break or a reply that
        could not be read, the server may never answer one, and waiting for
        it would hold the worker for the whole command timeout."""
        self._smtp.close()


def _envelope_commands(mail_from, mail_options, recipients):
    # SMTPUTF8 (RFC 6531) allows UTF-8 in the commands; without it a
    # non-ASCII address raises UnicodeEncodeError before anything is sent.
    utf8 = any(option.upper() == "SMTPUTF8" for option in mail_options)
    lines = [_command("MAIL FROM:", mail_from, mail_options)]
    lines += [_command("RCPT TO:", address, options) for address, options in recipients]
    lines.append("DATA\r\n")
    return "".join(lines).encode("utf-8" if utf8 else "ascii")


def _command(verb, address, options):
    return f"{verb}{smtplib.quoteaddr(address)}{''.join(' ' + o for o in options)}\r\n"


def _refused(result, addresses, mail, rcpts, accepted, data_reply):
    """The result of a transaction that ended before its data."""
    if mail.code != 250:
        return _all(result, addresses, mail)
    result.replies = dict(zip(addresses, rcpts))
    for address in accepted:
        result.replies[address] = data_reply
    return result


def _reply(raw):
    """A Reply from smtplib's (code, text). A line smtplib could not read as
    a reply (it gives code -1) or a code outside 2xx-5xx means the server is
    not speaking SMTP: the session cannot go on (RFC 5321 section 4.2)."""
    code, text = raw
    if code == -1:
        # smtplib keeps only what follows the first four characters, so the
        # line is not quoted: it would look like something the server said.
        raise ConnectionProblem("unreadable reply from the server: no reply code")
    if not 200 <= code <= 599:
        raise ConnectionProblem(f"unreadable reply from the server: code {code}")
    return Reply(code, _text(text))


def _describe(exc):
    return f"{type(exc).__name__}: {exc}"


def _all(result, addresses, reply):
    result.replies = {address: reply for address in addresses}
    return result
