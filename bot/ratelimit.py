"""Per-user rate limit: a sliding one-minute window, in this process."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable

WINDOW_S = 60.0


class RateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.per_minute, self._clock = per_minute, clock
        self._hits: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def allow(self, user_id: str) -> bool:
        """Count one question of `user_id`; False when they asked `per_minute` times in the last minute.
        (A Slack redelivery of a question is caught by its event id in the database, not here.)"""
        with self._lock:
            now, hits = self._clock(), self._hits[user_id]
            while hits and hits[0] <= now - WINDOW_S:
                hits.popleft()
            if len(hits) >= self.per_minute:
                return False
            hits.append(now)
            return True
