"""Counters with an expiry, shared by every gateway process through Redis.

Without Redis (the embedded defaults of bin/dev run none) the counts live in
this process only: with several gateway processes each then allows the full
limit, which is the known shortcoming of that mode.
"""

import threading
import time

KEY_PREFIX = "postern:gw:"


class RedisCounters:
    def __init__(self, url):
        import redis

        self.redis = redis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2
        )

    def add(self, amounts):
        """Add each (key, amount, ttl): a new key lives ttl seconds. Returns
        the new totals in the same order."""
        pipe = self.redis.pipeline()
        for key, amount, ttl in amounts:
            pipe.incrby(KEY_PREFIX + key, amount)
            # NX: the window's expiry is set by its first use only.
            pipe.expire(KEY_PREFIX + key, ttl, nx=True)
        results = pipe.execute()
        return [int(total) for total in results[::2]]

    def get(self, keys):
        if not keys:
            return []
        values = self.redis.mget([KEY_PREFIX + key for key in keys])
        return [int(value or 0) for value in values]

    def set_flag(self, key, ttl):
        self.redis.set(KEY_PREFIX + key, 1, ex=ttl)

    def flag_ttl(self, key):
        """Seconds left on a flag, or 0 when it is not set."""
        return max(int(self.redis.ttl(KEY_PREFIX + key)), 0)


class LocalCounters:
    def __init__(self):
        self.lock = threading.Lock()
        self.values = {}  # key -> [total, expires_at]

    def _live(self, key, now):
        entry = self.values.get(key)
        if entry and entry[1] <= now:
            del self.values[key]
            entry = None
        return entry

    def add(self, amounts):
        now = time.monotonic()
        totals = []
        with self.lock:
            for key, amount, ttl in amounts:
                entry = self._live(key, now)
                if entry is None:
                    entry = self.values[key] = [0, now + ttl]
                entry[0] += amount
                totals.append(entry[0])
        return totals

    def get(self, keys):
        now = time.monotonic()
        with self.lock:
            return [(self._live(key, now) or [0])[0] for key in keys]

    def set_flag(self, key, ttl):
        with self.lock:
            self.values[key] = [1, time.monotonic() + ttl]

    def flag_ttl(self, key):
        now = time.monotonic()
        with self.lock:
            entry = self._live(key, now)
        return int(entry[1] - now) + 1 if entry else 0


def make_counters(redis_url):
    return RedisCounters(redis_url) if redis_url else LocalCounters()
