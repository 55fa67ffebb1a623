"""Acks first: under a burst, work that can wait (notices, answers) waits for the acks.

Slack gives an ack 3 s; a person waits seconds for an answer anyway. All of the bot shares one interpreter,
so a hundred requests arriving at once compete with the answers being streamed and the notices being posted,
and each ack waits for its share: measured on 2 cores, that doubled the acks' p99 (bench/slack_load.py).
While more than `burst` requests are being acknowledged, the work that can wait pauses before its next step,
for at most `max_wait_s` at a time, so that steady traffic never starves it.
"""

from __future__ import annotations

import threading

from slack_bolt import App, BoltRequest

BURST = 4  # requests being acked at once that make a burst (steady traffic rarely has more than one)
MAX_WAIT_S = 1.0  # the longest one step of waiting work pauses: well within the pacing of answers


class AckPriority:
    def __init__(self, *, burst: int = BURST, max_wait_s: float = MAX_WAIT_S):
        self._burst, self._max_wait_s = burst, max_wait_s
        self._acking = 0
        self._changed = threading.Condition()

    def watch(self, app: App) -> None:
        """Count the requests `app` is acknowledging: Bolt's adapters (HTTP and Socket Mode) send Slack what
        `dispatch` returns, and it returns when the listener has acked."""
        dispatch = app.dispatch

        def counted(request: BoltRequest):
            with self._changed:
                self._acking += 1
            try:
                return dispatch(request)
            finally:
                with self._changed:
                    self._acking -= 1
                    if self._acking <= self._burst:
                        self._changed.notify_all()

        app.dispatch = counted

    @property
    def acking(self) -> int:
        return self._acking

    def yield_to_acks(self) -> None:
        """Return at once, or when a burst of acks is over (at most `max_wait_s` later)."""
        with self._changed:
            self._changed.wait_for(lambda: self._acking <= self._burst, timeout=self._max_wait_s)
