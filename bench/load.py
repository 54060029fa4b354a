"""The load generator: many concurrent SMTP sessions in one asyncio loop,
each sending numbered messages until the scenario's count is reached.

Bounded twice: by the number of messages and by a time limit, after which
the sessions stop wherever they are.
"""

import asyncio
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field

from tests.support.submission import (
    ACCEPTED,
    Reply,
    Session,
    SessionBroken,
    numbered_message,
)


@dataclass
class Target:
    host: str
    port: int
    sender: str
    username: str = ""
    secret: str = ""
    tls: bool = True
    auth: bool = True


@dataclass
class LoadResult:
    data_sent_at: dict = field(default_factory=dict)  # seq -> monotonic time
    accepted_at: dict = field(default_factory=dict)  # seq -> monotonic time
    failures: Counter = field(default_factory=Counter)  # reply or error -> count
    started: float = 0.0
    finished: float = 0.0


async def drive(target, prefix, count, sessions, size, recipients, time_limit,
                rate=None):
    """rate: messages per second to offer in all (paced by their numbers);
    None sends as fast as the server answers."""
    result = LoadResult(started=time.monotonic())
    numbers = itertools.count(1)

    async def one_session():
        session = None
        opened = 0
        while True:
            number = next(numbers)
            if number > count:
                break
            if rate:
                due = result.started + (number - 1) / rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            if session is None or not session.is_open:
                if opened >= 3 * count:
                    break
                opened += 1
                session = await open_session(target, result)
                if session is None:
                    continue
            seq = f"{prefix}-{number}"
            data = numbered_message(target.sender, recipients[0], seq, size)
            outcome, code, text = await session.send(target.sender, recipients, data)
            if outcome == ACCEPTED:
                result.data_sent_at[seq] = session.data_sent_at
                result.accepted_at[seq] = time.monotonic()
            else:
                result.failures[f"{outcome} {code} {text[:60]}"] += 1
        if session is not None:
            await session.quit()

    tasks = [asyncio.create_task(one_session()) for _ in range(sessions)]
    done, pending = await asyncio.wait(tasks, timeout=time_limit)
    for task in pending:
        task.cancel()
    if pending:
        result.failures["stopped by the time limit"] += len(pending)
    for task in done:
        if task.exception() is not None:
            result.failures[f"load error {type(task.exception()).__name__}"] += 1
    result.finished = time.monotonic()
    return result


async def open_session(target, result):
    session = Session(target.host, target.port, target.username, target.secret,
                      timeout=120)
    try:
        return await session.open(tls=target.tls, login=target.auth)
    except Reply as refused:
        result.failures[f"open {refused.code} {refused.text[:60]}"] += 1
    except SessionBroken as exc:
        result.failures[f"open broken {str(exc)[:60]}"] += 1
    await asyncio.sleep(0.2)
    return None


async def hold_idle(target, connections, batch=50):
    """Open `connections` sessions (STARTTLS and AUTH done) and keep them
    open; returns them, for close_all() once measured."""
    held = []
    for start in range(0, connections, batch):
        size = min(batch, connections - start)
        opened = await asyncio.gather(
            *(Session(target.host, target.port, target.username, target.secret,
                      timeout=120).open(tls=target.tls, login=target.auth)
              for _ in range(size)),
            return_exceptions=True,
        )
        held += [session for session in opened if isinstance(session, Session)]
    return held


async def close_all(sessions):
    await asyncio.gather(*(session.quit() for session in sessions),
                         return_exceptions=True)
