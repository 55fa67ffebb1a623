"""What every listener needs: the settings, the database (and its group commit, which stores a burst's
questions and votes before their acks in a few transactions), the rate limiter, the channel pacer, the queue of
questions waiting for an answer, the bell that wakes the process answering a stored question's channel
(bot/channel_shares.py), a small pool for Slack calls that must not delay an ack, and the count of acks in
progress that work which can wait yields to (bot/ack_priority.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from bot import metrics
from bot.ack_priority import AckPriority
from bot.answer_queue import AnswerJob, AnswerQueue
from bot.channel_shares import QuestionBell
from bot.ratelimit import RateLimiter
from bot.streaming import ChannelPacer
from flywheel.settings import Settings
from storage.db import make_engine
from storage.group_commit import GroupCommit
from storage.redaction import redact

if TYPE_CHECKING:
    from bot.question_feed import QuestionFeed

log = logging.getLogger(__name__)
REPLY_THREADS = 16  # confirmations, notices, modals: short Slack calls made after the ack
STOP_ANSWERS_S = 30.0  # how long a stopping bot lets the answers being written finish


@dataclass
class Services:
    settings: Settings
    engine: Engine
    answering_processes: int = 1  # the shares the channels are answered in (bot/channel_shares.py)
    writes: GroupCommit = field(init=False)
    acks: AckPriority = field(init=False)
    limiter: RateLimiter = field(init=False)
    pacer: ChannelPacer = field(init=False)
    bell: QuestionBell = field(init=False)
    answers: AnswerQueue | None = field(init=False, default=None)
    feed: QuestionFeed | None = field(init=False, default=None)
    _replies: ThreadPoolExecutor = field(init=False)
    _finishing: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self.writes = GroupCommit(self.engine)
        self.acks = AckPriority()
        self.limiter = RateLimiter(self.settings.rate_limit_per_minute)
        self.pacer = ChannelPacer(self.settings.stream_interval_s, before_turn=self.acks.yield_to_acks)
        self.bell = QuestionBell(self.settings.home, self.answering_processes)
        self._replies = ThreadPoolExecutor(REPLY_THREADS, thread_name_prefix="slack-reply")

    @classmethod
    def from_settings(cls, settings: Settings, answering_processes: int = 1) -> "Services":
        return cls(settings, make_engine(settings.database_url), answering_processes)

    def start_answering(self, answer: Callable[[AnswerJob], None]) -> None:
        """The answer queue of this process: its share of the workers and of the line."""
        processes = self.answering_processes
        workers = max(1, self.settings.answer_workers_count // processes)
        self._finishing = ThreadPoolExecutor(workers, thread_name_prefix="answer-finish")
        self.answers = AnswerQueue(answer, workers=workers,
                                   capacity=max(1, self.settings.answer_queue_size // processes),
                                   on_change=metrics.answer_queue_changed)

    def question_stored(self, channel_id: str) -> None:
        """A listener stored a question (or a Try again) of `channel_id`: the process answering it looks at once."""
        self.bell.ring(channel_id)

    def after_answer(self, call: Callable, *args) -> Future:
        """An answer's last steps, once the model is done with it: its record and its last write, which waits
        for the channel's next turn (up to `stream_interval_s`). Off the answer worker, so that the worker asks
        the model the next question meanwhile and the model runs as many answers as it can."""
        return _logged(self._finishing.submit(call, *args))

    def in_background(self, call: Callable, *args, **kwargs) -> Future:
        """Run a Slack call after the ack instead of before it; a failure is logged, never raised."""
        return _logged(self._replies.submit(call, *args, **kwargs))

    def after_acks(self, call: Callable, *args, **kwargs) -> Future:
        """`in_background`, for a call that can wait until a burst of acks is over (a notice, not a modal:
        a modal must open within 3 s of the click)."""
        return self.in_background(_after_acks, self.acks, call, *args, **kwargs)

    def storable(self, text: str) -> str:
        """Text as it may be stored: redacted when the `pii_redaction` setting is on."""
        return redact(text) if self.settings.pii_redaction else text

    def close(self) -> None:
        """Finish the answers being written; questions still waiting stay stored for the next start."""
        if self.feed is not None:
            self.feed.stop()
        if self.answers is not None:
            waiting = self.answers.close(STOP_ANSWERS_S)
            if waiting:
                log.info("%d question(s) were still waiting: they are answered when the bot starts again", waiting)
            self._finishing.shutdown(wait=True)
        self._replies.shutdown(wait=True)
        self.bell.close()
        self.writes.close()
        self.engine.dispose()


def _after_acks(acks: AckPriority, call: Callable, *args, **kwargs):
    acks.yield_to_acks()
    return call(*args, **kwargs)


def _logged(future: Future) -> Future:
    """`future`, whose failure is logged when it ends (work after the ack raises to nobody)."""
    future.add_done_callback(_log_failure)
    return future


def _log_failure(future: Future) -> None:
    if (exc := future.exception()) is not None:
        log.warning("work after the ack failed: %s: %s", type(exc).__name__, exc)
