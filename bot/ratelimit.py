"""Per-user rate limit: a sliding one-minute window, in this process."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable
from enum import Enum

WINDOW_S = 60.0
REMEMBERED_KEYS = 10_000


class Decision(str, Enum):
    allow = "allow"
    deny = "deny"
    seen = "seen"  # the same event again (a Slack retry): decided already, do nothing


class RateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.per_minute, self._clock = per_minute, clock
        self._hits: dict[str, deque[float]] = defaultdict(deque)
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, user_id: str, key: str | None = None) -> Decision:
        """Count one question of `user_id`; `key` (the Slack event id) makes a redelivery count once."""
        with self._lock:
            if key is not None:
                if key in self._keys:
                    return Decision.seen
                self._keys[key] = None
                if len(self._keys) > REMEMBERED_KEYS:
                    self._keys.popitem(last=False)
            now, hits = self._clock(), self._hits[user_id]
            while hits and hits[0] <= now - WINDOW_S:
                hits.popleft()
            if len(hits) >= self.per_minute:
                return Decision.deny
            hits.append(now)
            return Decision.allow
