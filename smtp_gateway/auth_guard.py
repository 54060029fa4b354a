"""Brute-force protection for SMTP AUTH.

Failures are counted per client address and per username over a window.
After `slow_after` failures each further answer is delayed, a second more per
failure up to `max_delay`; after `block_after` the address is refused without
checking any password for `block_seconds`. A blocked username is refused only
to addresses that have failed themselves within the window (see blocked_for).
Counting through Redis makes every gateway process see the same failures.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class GuardPolicy:
    window: int = 900
    slow_after: int = 3
    block_after: int = 10
    block_seconds: int = 900
    delay_step: float = 1.0
    max_delay: float = 5.0


def _user_subject(username):
    return f"user:{username.lower()[:64]}"


def _subjects(peer_ip, username):
    subjects = [f"ip:{peer_ip}"] if peer_ip else []
    if username:
        subjects.append(_user_subject(username))
    return subjects


def blocked_for(counters, peer_ip, username):
    """Seconds left on a block that applies to this address and username; 0 if
    none.

    A username block does not apply to an address with no failures of its own
    in the window. Otherwise anyone who learns a username, which is no secret
    (it sits in configuration files and support tickets), could lock the real
    application out with a few wrong passwords from anywhere. Guessing stays
    stopped: once the username is blocked, an address that fails once is
    refused, so each further address gets one guess per window, slowed by
    the username's count, against a random 256-bit secret
    (relay/secretbox.py). Per-address blocking is unchanged."""
    ip_block = counters.flag_ttl(f"authblock:ip:{peer_ip}") if peer_ip else 0
    if not username:
        return ip_block
    user_block = counters.flag_ttl(f"authblock:{_user_subject(username)}")
    if user_block and peer_ip:
        (failures,) = counters.get([f"authfail:ip:{peer_ip}"])
        if not failures:
            user_block = 0
    return max(ip_block, user_block)


def record_failure(counters, policy, peer_ip, username):
    """Count one failure; returns (delay_seconds, newly_blocked_subjects)."""
    subjects = _subjects(peer_ip, username)
    totals = counters.add([(f"authfail:{s}", 1, policy.window) for s in subjects])
    blocked = []
    for subject, total in zip(subjects, totals):
        if total == policy.block_after:
            counters.set_flag(f"authblock:{subject}", policy.block_seconds)
            blocked.append(subject)
    worst = max(totals, default=0)
    over = worst - policy.slow_after
    delay = min(over * policy.delay_step, policy.max_delay) if over > 0 else 0.0
    return delay, blocked


def block_description(subject, policy):
    """How a new block reads among the security events."""
    kind = subject.partition(":")[0]
    where = " for addresses that failed" if kind == "user" else ""
    return f"{kind} blocked for {policy.block_seconds} seconds{where}"
