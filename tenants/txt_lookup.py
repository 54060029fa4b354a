"""TXT lookups that keep apart the answers a person must act on differently:
a name that does not exist, a name without TXT records, a time-out and a
failing server. relay.dns.txt_strings folds the first two together, which is
right for signing and wrong for telling a tenant what to fix."""

from dataclasses import dataclass, field

import dns.exception
import dns.resolver

from relay.dns import resolver

FOUND = "found"
NO_SUCH_NAME = "no_such_name"
NO_RECORD = "no_record"
TIMED_OUT = "timed_out"
FAILED = "failed"


@dataclass(frozen=True)
class TxtAnswer:
    name: str
    outcome: str
    # Each TXT record as one string: its character-strings joined, since a
    # record longer than 255 octets must be split (RFC 7208 section 3.3,
    # RFC 6376 section 3.6.2.2).
    values: list = field(default_factory=list)

    @property
    def is_definitive(self):
        """True when DNS answered, so the absence of a record is real and not
        a passing fault of a server."""
        return self.outcome in (FOUND, NO_SUCH_NAME, NO_RECORD)

    def describe_failure(self):
        if self.outcome == NO_SUCH_NAME:
            return f"{self.name} does not exist in DNS (NXDOMAIN)."
        if self.outcome == NO_RECORD:
            return f"{self.name} exists but has no TXT record."
        if self.outcome == TIMED_OUT:
            return f"The DNS lookup of {self.name} timed out; nothing was changed."
        if self.outcome == FAILED:
            return (
                f"The DNS servers for {self.name} did not answer properly "
                "(SERVFAIL)."
            )
        return ""


def lookup_txt(name):
    try:
        answer = resolver().resolve(name, "TXT")
    except dns.resolver.NXDOMAIN:
        return TxtAnswer(name, NO_SUCH_NAME)
    except dns.resolver.NoAnswer:
        return TxtAnswer(name, NO_RECORD)
    except dns.exception.Timeout:
        return TxtAnswer(name, TIMED_OUT)
    except dns.exception.DNSException:
        return TxtAnswer(name, FAILED)
    values = [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer]
    return TxtAnswer(name, FOUND, values)
