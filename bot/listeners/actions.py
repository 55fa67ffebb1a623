"""Buttons on the bot's answers: 👍 / 👎, "Better answer" (opens the modal), "Try again".

A vote is stored before the ack; the confirmation, the modal and the new answer come after it.
"""

from __future__ import annotations

import logging

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot import blocks, metrics
from bot.answering import ACK_STORE_S, Where, post_ephemeral, text_field
from bot.services import Services
from storage.db import session_scope
from storage.errors import NotFound
from storage.interactions import ask_again, get_interaction, record_vote
from storage.models import Vote

log = logging.getLogger(__name__)
GONE = "Sorry, I can't find that answer any more."


def _where(body: dict) -> Where:
    message = body.get("message") or {}
    thread = text_field(message, "thread_ts", required=False) or text_field(message, "ts")
    return Where(text_field(body["channel"], "id"), thread, text_field(body["user"], "id"))


def store_vote(services: Services, interaction_id: int, user_id: str, vote: Vote) -> str:
    """Record the vote (retried while the database restarts); returns the confirmation to show."""

    def record(session) -> tuple[str, int]:
        feedback, pairs = record_vote(session, interaction_id, user_id, vote)
        return feedback.interaction.served_model or "unknown", len(pairs)

    try:
        model, pairs = services.writes.run(record, within_s=ACK_STORE_S)
    except NotFound:
        return GONE
    metrics.VOTES.labels(vote.value, model).inc()
    if pairs:
        log.info("vote on interaction %s made %d preference pair(s)", interaction_id, pairs)
    return blocks.vote_confirmation(vote.value)


def open_better_answer(services: Services, client: WebClient, interaction_id: int, where: Where, trigger_id: str) -> None:
    try:
        with session_scope(services.engine) as session:
            answer = get_interaction(session, interaction_id).answer
    except NotFound:
        post_ephemeral(client, where.channel_id, where.user_id, where.thread_ts, GONE)
        return
    view = blocks.better_answer_modal(interaction_id, answer, where.channel_id, where.thread_ts or "")
    client.views_open(trigger_id=trigger_id, view=view)


def register(app: App, services: Services) -> None:
    @app.action(blocks.VOTE_ACTION)
    def vote(ack: Ack, body: dict, client: WebClient) -> None:
        choice, _, interaction_id = text_field(body["actions"][0], "value").partition(":")
        where = _where(body)
        reply = store_vote(services, int(interaction_id), where.user_id, Vote(choice))  # before the ack
        ack()
        services.after_acks(post_ephemeral, client, where.channel_id, where.user_id, where.thread_ts, reply)

    @app.action(blocks.BETTER_ACTION)
    def better_answer(ack: Ack, body: dict, client: WebClient) -> None:
        ack()
        interaction_id = int(body["actions"][0]["value"])
        services.in_background(open_better_answer, services, client, interaction_id, _where(body), body["trigger_id"])

    @app.action(blocks.RETRY_ACTION)
    def try_again(ack: Ack, body: dict) -> None:
        interaction_id, notice_ts = int(body["actions"][0]["value"]), text_field(body["message"], "ts")
        try:  # the question waits again before the ack: its owner's feed answers it in place of the notice
            asked = services.writes.run(lambda session: ask_again(session, interaction_id, notice_ts),
                                        within_s=ACK_STORE_S)
        except NotFound:
            asked = False
        ack()
        if asked:
            services.question_stored(_where(body).channel_id)
