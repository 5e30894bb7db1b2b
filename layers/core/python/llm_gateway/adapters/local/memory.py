"""In-process adapters for a single gateway process (the embedded default)."""

from __future__ import annotations

import threading

from ...config import RateLimit


class MemoryRateLimiter:
    """Token buckets in a dict, guarded by one lock (a bucket update takes about a microsecond)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # bucket -> (tokens, updated_at)

    def acquire(self, bucket: str, limit: RateLimit, now: float) -> float:
        rate = limit.requests_per_minute / 60.0
        capacity = float(limit.capacity())
        with self._lock:
            tokens, updated = self._buckets.get(bucket, (capacity, now))
            tokens = min(capacity, tokens + max(0.0, now - updated) * rate)
            if tokens >= 1.0 - 1e-9:  # float refill of an exact wait lands a hair short of 1
                self._buckets[bucket] = (tokens - 1.0, now)
                return 0.0
            self._buckets[bucket] = (tokens, now)
            return (1.0 - tokens) / rate
