"""MAIL FROM and RCPT TO parameters: parsed, checked and kept for delivery.

Each parse function returns (params, None) or (None, reply) where the reply is
the SMTP line to send. Keys are upper-case; values keep their case, because
ENVID and ORCPT are opaque to us and must reach the bounce unchanged.
"""

import re

# RFC 5321 section 4.1.2, with RFC 6531 section 3.3's non-ASCII characters
# allowed in atoms and labels (bytes that are not UTF-8 arrive as surrogate
# escapes and are refused). A source route ("@a,@b:") is accepted and
# ignored, as section 4.1.1.3 asks.
_ATEXT = r"[^\x00-\x20\x7f<>()\[\]\\,;:@\".\udc80-\udcff]"
_DOT_STRING = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_QUOTED = r'"(?:[^"\\\r\n]|\\[\x20-\x7e])*"'
_LABEL = r"[^\x00-\x20\x7f<>()\[\]\\,;:@\".\udc80-\udcff]+"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*\.?|\[[^\[\]\\\s]+\]"
_PATH = re.compile(
    r"<(?:@[^:<>]+:)?"
    rf"(?P<mailbox>(?P<local>{_DOT_STRING}|{_QUOTED})@(?P<domain>{_DOMAIN}))>"
    r"(?P<rest>(?: .*)?)",
    re.DOTALL,
)
# RFC 5321 section 4.5.3.1: local part 64 octets, domain 255, path 256.
LOCAL_PART_MAX, DOMAIN_MAX, PATH_MAX = 64, 255, 256

# RFC 3461 section 4: xtext is printable ASCII except "+" and "=", with
# "+XX" hex escapes for anything else.
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*")
_NOTIFY_WORDS = {"SUCCESS", "FAILURE", "DELAY"}
# RFC 3461 section 4.4: ENVID is at most 100 characters; section 4.2: ORCPT
# at most 500.
ENVID_MAX = 100
ORCPT_MAX = 500


def parse_path(text):
    """'<mailbox> params' into (mailbox, params); '<>' gives ''. None when
    the path is malformed or longer than RFC 5321 allows."""
    if text.startswith("<>") and (len(text) == 2 or text[2] == " "):
        return "", text[2:]
    match = _PATH.fullmatch(text)
    if match is None:
        return None
    mailbox = match.group("mailbox")
    if (
        len(match.group("local").encode()) > LOCAL_PART_MAX
        or len(match.group("domain").encode()) > DOMAIN_MAX
        or len(mailbox.encode()) + 2 > PATH_MAX
    ):
        return None
    return mailbox, match.group("rest")


def _split(text):
    """'KEY=value KEY2' into [(KEY, value), (KEY2, None)], or None when a
    keyword is malformed (RFC 5321 section 4.1.2: esmtp-keyword)."""
    pairs = []
    for item in text.split():
        key, eq, value = item.partition("=")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", key) or (eq and not value):
            return None
        pairs.append((key.upper(), value if eq else None))
    return pairs


def parse_mail_params(text, *, size_limit, smtputf8_enabled=True):
    pairs = _split(text)
    if pairs is None:
        return None, "501 5.5.4 Malformed MAIL FROM parameters"
    params = {}
    for key, value in pairs:
        if key in params:
            return None, f"501 5.5.4 {key} given twice"
        if key == "SIZE":
            # RFC 1870 section 6
            if value is None or not value.isdigit() or len(value) > 20:
                return None, "501 5.5.4 SIZE needs a number of octets"
            if int(value) > size_limit:
                return None, (
                    f"552 5.3.4 Message size exceeds the limit of {size_limit} octets"
                )
            params[key] = int(value)
        elif key == "BODY":
            # RFC 6152 section 2
            if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                return None, "501 5.5.4 BODY must be 7BIT or 8BITMIME"
            params[key] = value.upper()
        elif key == "SMTPUTF8":
            # RFC 6531 section 3.4
            if value is not None:
                return None, "501 5.5.4 SMTPUTF8 takes no value"
            if not smtputf8_enabled:
                return None, "555 5.5.4 SMTPUTF8 is not available"
            params[key] = True
        elif key == "RET":
            # RFC 3461 section 4.3
            if value is None or value.upper() not in ("FULL", "HDRS"):
                return None, "501 5.5.4 RET must be FULL or HDRS"
            params[key] = value.upper()
        elif key == "ENVID":
            if value is None or len(value) > ENVID_MAX or not _XTEXT.fullmatch(value):
                return None, "501 5.5.4 ENVID must be xtext of at most 100 characters"
            params[key] = value
        else:
            return None, f"555 5.5.4 MAIL FROM parameter {key} is not supported"
    return params, None


def parse_rcpt_params(text):
    pairs = _split(text)
    if pairs is None:
        return None, "501 5.5.4 Malformed RCPT TO parameters"
    params = {}
    for key, value in pairs:
        if key in params:
            return None, f"501 5.5.4 {key} given twice"
        if key == "NOTIFY":
            # RFC 3461 section 4.1: NEVER alone, or a list of the others.
            words = (value or "").upper().split(",")
            if words != ["NEVER"] and not (
                set(words) <= _NOTIFY_WORDS and len(set(words)) == len(words)
            ):
                return None, (
                    "501 5.5.4 NOTIFY must be NEVER or a list of SUCCESS, "
                    "FAILURE, DELAY"
                )
            params[key] = ",".join(words)
        elif key == "ORCPT":
            # RFC 3461 section 4.2: addr-type ";" xtext
            addr_type, semi, original = (value or "").partition(";")
            if (
                not semi
                or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", addr_type)
                or not original
                or len(value) > ORCPT_MAX
                or not _XTEXT.fullmatch(original)
            ):
                return None, "501 5.5.4 ORCPT must be addr-type;xtext"
            params[key] = value
        else:
            return None, f"555 5.5.4 RCPT TO parameter {key} is not supported"
    return params, None
