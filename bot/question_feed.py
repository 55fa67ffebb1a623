"""The answer queue's feed: stored questions, from the database, into the line of this bot process.

Every bot process that receives Slack's requests stores the questions it receives and acks them; none hands
a question to another. Each process that answers answers the waiting questions of its share of the channels
(bot/channel_shares.py), which it reads from the database when the process that stored one rings its bell
(itself, another process that does both, or a receive process: bot/processes.py), at its start, and every
second as a safety net. Questions stored by a process that stopped are answered by the owner of their channel
(after a restart too: they wait in the database).
A question that has to wait is told its place; one beyond the line's bound is refused with a notice and
Try again (stored as failed: the button asks again).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from slack_sdk import WebClient

from bot import blocks
from bot.answer_queue import AnswerJob, QueueFull
from bot.answering import Where, offer_retry, post_ephemeral
from bot.channel_shares import ChannelShare
from bot.services import Services
from storage.db import read_scope, session_scope
from storage.interactions import WaitingQuestion, fail_interaction, waiting_questions
from storage.models import utcnow

log = logging.getLogger(__name__)
SAFETY_POLL_S = 1.0  # the longest a question waits for its owner when its ring was lost


class QuestionFeed:
    def __init__(self, services: Services, client: WebClient, share: ChannelShare):
        self._services, self._client, self._share = services, client, share
        self._door = services.bell.door(share)
        self._bot_user_id: str | None = None
        self._taken: set[tuple[int, str | None]] = set()  # (question, Try again message) put in line here
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._feed, name="question-feed", daemon=True)

    def start(self) -> None:
        self._bot_user_id = self._client.auth_test()["user_id"]  # to tell the bot's own messages in threads
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._services.bell.ring_share(self._share.index)
        if self._thread.is_alive():
            self._thread.join()
        self._door.close()

    def _feed(self) -> None:
        starting = True
        while not self._stopping.is_set():
            # Rung by each question of a burst, it would read again and again while the acks wait for the
            # interpreter; what it puts in line waits for the acks anyway (answers and notices: ack_priority.py).
            self._services.acks.yield_to_acks()
            try:
                new = self._take_waiting()
            except Exception:  # noqa: BLE001 - a database that is restarting: the next read tries again
                log.exception("could not read the questions waiting for an answer")
                new = 0
            if starting and new:  # what a stopped bot left unanswered
                log.info("resumed %d unanswered question(s)", new)
            starting = False
            self._door.wait(SAFETY_POLL_S)

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
            with session_scope(self._services.engine) as session:  # before the next read sees it waiting
                fail_interaction(session, job.interaction_id, f"busy: {full}")
            self._services.after_acks(offer_retry, self._services, self._client,
                                      blocks.busy_blocks(job.interaction_id), where, job.replace_ts)
            return
        if place:
            self._services.after_acks(post_ephemeral, self._client, where.channel_id, where.user_id,
                                      where.thread_ts, blocks.queued_notice(place))
