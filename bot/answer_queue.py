"""Questions waiting for an answer, and the bounded pool of workers that answers them.

Slack must be acked within 3 s, and a vote must never wait behind a model busy writing a hundred answers:
listeners only store a question, the process's feed puts it here (bot/question_feed.py, which also
makes sure a question is put in line once), and `workers` threads (as many as the model server runs
sequences at once) answer in the order questions came. The line is bounded: beyond `capacity` waiting
questions a new one is refused at once, and the caller tells the asker (the question stays stored, with
Try again) instead of letting them wait for an answer that would come too late to matter.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnswerJob:
    interaction_id: int
    bot_user_id: str | None  # to tell the bot's own messages in the thread apart
    replace_ts: str | None = None  # answer in place of this message (Try again under an apology)


class QueueFull(Exception):
    """The line of waiting questions is at its bound."""


class AnswerQueue:
    def __init__(self, answer: Callable[[AnswerJob], None], *, workers: int, capacity: int,
                 on_change: Callable[[int, int], None] = lambda waiting, answering: None):
        self._answer, self._workers, self._capacity, self._on_change = answer, workers, capacity, on_change
        self._waiting: deque[AnswerJob] = deque()
        self._busy = 0
        self._closing = False
        self._changed = threading.Condition()
        self._threads = [threading.Thread(target=self._work, name=f"answer-{n}", daemon=True) for n in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, job: AnswerJob) -> int:
        """Queue `job`. Returns its place in line (1 = next to start), or 0 when a worker takes it now.
        Raises QueueFull at the bound."""
        with self._changed:
            if len(self._waiting) >= self._capacity or self._closing:
                raise QueueFull(f"{len(self._waiting)} questions are waiting already")
            self._waiting.append(job)
            self._changed.notify()
            self._on_change(len(self._waiting), self._busy)
            return max(0, len(self._waiting) - (self._workers - self._busy))

    def _work(self) -> None:
        while (job := self._next()) is not None:
            try:
                self._answer(job)
            except Exception:  # one broken answer must not stop a worker
                log.exception("answering interaction %s failed", job.interaction_id)
            finally:
                with self._changed:
                    self._busy -= 1
                    self._changed.notify_all()
                    self._on_change(len(self._waiting), self._busy)

    def _next(self) -> AnswerJob | None:
        with self._changed:
            while not self._waiting and not self._closing:
                self._changed.wait()
            if self._closing:
                return None
            self._busy += 1
            job = self._waiting.popleft()
            self._on_change(len(self._waiting), self._busy)
            return job

    def close(self, timeout_s: float) -> int:
        """Take no more questions, let the answers being written finish (up to `timeout_s`), and return how
        many were still waiting: they stay stored as unanswered and are answered when the bot starts again."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return len(self._waiting)
