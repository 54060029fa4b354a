"""aiosmtpd's SMTP session, made strict for a relay."""

import re

from aiosmtpd.smtp import SMTP

# aiosmtpd answers some commands without an enhanced status code; RFC 2034
# requires one on every reply but the greeting and HELO/EHLO once
# ENHANCEDSTATUSCODES is advertised.
_SUCCESS_REPLIES = {
    "250 OK": "250 2.0.0 OK",
    "221 Bye": "221 2.0.0 Bye",
    "220 Ready to start TLS": "220 2.0.0 Ready to start TLS",
}
_FAILURE_DEFAULTS = {
    "454": "4.7.0",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.7.0",
}
_HAS_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}( |$)")


def with_enhanced_code(status):
    if status in _SUCCESS_REPLIES:
        return _SUCCESS_REPLIES[status]
    code, _, text = status.partition(" ")
    default = _FAILURE_DEFAULTS.get(code)
    if default and not _HAS_ENHANCED.match(text):
        return f"{code} {default} {text}"
    return status


class SubmissionSMTP(SMTP):
    async def push(self, status):
        await super().push(with_enhanced_code(status))
