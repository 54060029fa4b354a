"""Brute-force protection for SMTP AUTH.

Failures are counted per client address and per username over a window.
After `slow_after` failures each further answer is delayed, a second more per
failure up to `max_delay`; after `block_after` the address or username is
refused without checking any password for `block_seconds`. Counting through
Redis makes every gateway process see the same failures.
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


def _subjects(peer_ip, username):
    subjects = [f"ip:{peer_ip}"] if peer_ip else []
    if username:
        subjects.append(f"user:{username.lower()[:64]}")
    return subjects


def blocked_for(counters, peer_ip, username):
    """Seconds left on a block of this address or username; 0 if none."""
    return max(
        [counters.flag_ttl(f"authblock:{s}") for s in _subjects(peer_ip, username)],
        default=0,
    )


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
