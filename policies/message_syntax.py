"""Whether a message's header section can be read one way only.

The sender checks, the DKIM signer and every receiver each split the header
section into fields on their own. Where the syntax is broken they disagree:
Python's parser takes a line without a colon as the start of the body, while
a receiver may show it as a header; `From :` is no From for Python but is one
for many readers. A submission server may refuse what it cannot read
unambiguously (RFC 6409 section 8), so these messages are refused whole
rather than repaired.

8-bit octets in field values are not a fault here: RFC 6532 allows UTF-8
there, and real clients send it. Field names stay US-ASCII (RFC 6532 section
3.2 does not extend ftext).
"""

import re

from policies.sender import Refusal

# RFC 5322 section 2.2: field-name = 1*ftext, printable US-ASCII but ":".
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")
_WSP = b" \t"


def _refusal(text):
    return Refusal(550, "5.6.0", text)


def _header_lines(raw):
    """The lines of the header section, up to the first empty line."""
    if raw.startswith(b"\r\n"):
        return []
    head = raw.partition(b"\r\n\r\n")[0].removesuffix(b"\r\n")
    return head.split(b"\r\n") if head else []


def _line_problem(number, line):
    if line[:1] in (b" ", b"\t"):
        if number > 1:
            return None
        # With nothing above it to continue, the line would be joined to
        # whatever field is put on top of the message: the Date or Message-ID
        # we add, or a receiver's Received (RFC 5322 section 2.2.3).
        return _refusal(
            "Header section begins with whitespace: line 1 is a "
            "continuation of no field (RFC 5322 2.2.3)"
        )
    name, colon, _ = line.partition(b":")
    if not colon:
        return _refusal(
            f"Header line {number} has no colon; a blank line must "
            "separate the header section from the body (RFC 5322 2.2)"
        )
    if name != name.rstrip(_WSP) and _FIELD_NAME.fullmatch(name.rstrip(_WSP)):
        # RFC 5322 section 4.5 keeps this form only as obsolete syntax, never
        # to be generated; readers that accept it would see a field that our
        # checks and the DKIM field selection do not.
        return _refusal(
            f"Header line {number} has whitespace between the field "
            "name and the colon (obsolete, RFC 5322 3.6.8 and 4.5)"
        )
    if not _FIELD_NAME.fullmatch(name):
        return _refusal(
            f"Header line {number} has a field name that is empty or "
            "not printable US-ASCII (RFC 5322 2.2)"
        )
    return None


def check_message_syntax(raw):
    """A Refusal for the first syntax fault of raw (CRLF line endings, already
    checked), or None."""
    if b"\x00" in raw:
        # RFC 5322 section 3.5 (text) and section 2.2 (field bodies) exclude
        # NUL; receivers drop it, cut the message at it, or refuse it.
        return _refusal("Message contains a NUL octet (RFC 5322 2.2 and 3.5)")
    for number, line in enumerate(_header_lines(raw), start=1):
        problem = _line_problem(number, line)
        if problem:
            return problem
    return None
