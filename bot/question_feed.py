"""The answer queue's feed: stored questions, from the database, into the line of this bot process.

Every bot process that receives Slack's requests stores the questions it receives and acks them; none hands
a question to another. Each process that answers answers the waiting questions of its share of the channels
(`ChannelShare`), which it reads from the database at once when one of its own listeners stored one, and
every 50 ms when other processes store questions too (several processes, or receive and answer processes
apart: bot/processes.py). One process owns a channel, so one pacer keeps that channel's writes within Slack's
limit; questions stored by a process that stopped are answered by the owner of their channel (after a restart
too: they wait in the database).
A question that has to wait is told its place; one beyond the line's bound is refused with a notice and
Try again (stored as failed: the button asks again).
"""

from __future__ import annotations

import logging
import threading
import zlib
from dataclasses import dataclass
from datetime import timedelta

from slack_sdk import WebClient

from bot import blocks
from bot.answer_queue import AnswerJob, QueueFull
from bot.answering import Where, offer_retry, post_ephemeral
from bot.services import Services
from storage.db import read_scope, session_scope
from storage.interactions import WaitingQuestion, fail_interaction, waiting_questions
from storage.models import utcnow

log = logging.getLogger(__name__)
# How often the database is read: for questions other processes stored; when this process's own listeners
# store them all (one process receives and answers), only as a safety net (they wake it).
POLL_S, ALONE_POLL_S = 0.05, 1.0


@dataclass(frozen=True)
class ChannelShare:
    """Channels whose stable hash modulo `count` is `index`."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> "ChannelShare":
        """From "K/N" (process K of N, counted from 0)."""
        index, _, count = text.partition("/")
        share = cls(int(index), int(count))
        if not 0 <= share.index < share.count:
            raise ValueError(f"not a share of the channels: {text!r}")
        return share

    def owns(self, channel_id: str) -> bool:
        return self.count == 1 or zlib.crc32(channel_id.encode()) % self.count == self.index


class QuestionFeed:
    def __init__(self, services: Services, client: WebClient, share: ChannelShare, *, woken_by_listeners: bool):
        self._services, self._client, self._share = services, client, share
        self._poll_s = ALONE_POLL_S if woken_by_listeners else POLL_S
        self._bot_user_id: str | None = None
        self._taken: set[tuple[int, str | None]] = set()  # (question, Try again message) put in line here
        self._woken, self._stopping = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._feed, name="question-feed", daemon=True)

    def start(self) -> None:
        self._bot_user_id = self._client.auth_test()["user_id"]  # to tell the bot's own messages in threads
        self._thread.start()

    def wake(self) -> None:
        """A listener of this process stored a question: look now, not at the next poll."""
        self._woken.set()

    def stop(self) -> None:
        self._stopping.set()
        self._woken.set()
        if self._thread.is_alive():
            self._thread.join()

    def _feed(self) -> None:
        starting = True
        while not self._stopping.is_set():
            try:
                new = self._take_waiting()
            except Exception:  # noqa: BLE001 - a database that is restarting: the next poll tries again
                log.exception("could not read the questions waiting for an answer")
                new = 0
            if starting and new:  # what a stopped bot left unanswered
                log.info("resumed %d unanswered question(s)", new)
            starting = False
            self._woken.wait(self._poll_s)
            self._woken.clear()

    def _take_waiting(self) -> int:
        """Put in line what waits for this process; returns how many were new."""
        since = utcnow() - timedelta(minutes=self._services.settings.resume_window_minutes)
        with read_scope(self._services.engine) as session:
            waiting = [q for q in waiting_questions(session, "slack", since) if self._share.owns(q.channel_id)]
        keys = {(q.interaction_id, q.replace_ts) for q in waiting}
        self._taken &= keys  # answered or refused since: forgotten
        new = [q for q in waiting if (q.interaction_id, q.replace_ts) not in self._taken]
        for question in new:
            self._taken.add((question.interaction_id, question.replace_ts))
            self._put_in_line(question)
        return len(new)

    def _put_in_line(self, question: WaitingQuestion) -> None:
        job = AnswerJob(question.interaction_id, self._bot_user_id, question.replace_ts)
        where = Where(question.channel_id, question.thread_ts, question.user_id, question.team_id)
        try:
            place = self._services.answers.submit(job)
        except QueueFull as full:
            with session_scope(self._services.engine) as session:  # before the next poll sees it waiting
                fail_interaction(session, job.interaction_id, f"busy: {full}")
            self._services.after_acks(offer_retry, self._services, self._client,
                                      blocks.busy_blocks(job.interaction_id), where, job.replace_ts)
            return
        if place:
            self._services.after_acks(post_ephemeral, self._client, where.channel_id, where.user_id,
                                      where.thread_ts, blocks.queued_notice(place))
