"""Buttons on the bot's answers: 👍 / 👎, "Better answer" (opens the modal), "Try again"."""

from __future__ import annotations

import logging

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot import blocks, metrics
from bot.answering import post_ephemeral, retry_answer
from bot.services import Services
from storage.db import session_scope
from storage.errors import NotFound
from storage.interactions import get_interaction, record_vote
from storage.models import Vote

log = logging.getLogger(__name__)
GONE = "Sorry, I can't find that answer any more."


def _thread_of(body: dict) -> tuple[str, str | None]:
    message = body.get("message") or {}
    return body["channel"]["id"], message.get("thread_ts") or message.get("ts")


def register(app: App, services: Services) -> None:
    @app.action(blocks.VOTE_ACTION)
    def vote(ack: Ack, body: dict, client: WebClient) -> None:
        choice, _, interaction_id = body["actions"][0]["value"].partition(":")
        user_id, (channel_id, thread_ts) = body["user"]["id"], _thread_of(body)
        try:  # stored before the ack: two quick clicks land in the order they were made
            with session_scope(services.engine) as session:
                feedback, pairs = record_vote(session, int(interaction_id), user_id, Vote(choice))
                metrics.VOTES.labels(choice, feedback.interaction.served_model or "unknown").inc()
            reply = blocks.vote_confirmation(choice)
        except NotFound:
            pairs, reply = [], GONE
        ack()
        if pairs:
            log.info("vote on interaction %s made %d preference pair(s)", interaction_id, len(pairs))
        post_ephemeral(client, channel_id, user_id, thread_ts, reply)

    @app.action(blocks.BETTER_ACTION)
    def better_answer(ack: Ack, body: dict, client: WebClient) -> None:
        ack()
        interaction_id = int(body["actions"][0]["value"])
        channel_id, thread_ts = _thread_of(body)
        try:
            with session_scope(services.engine) as session:
                answer = get_interaction(session, interaction_id).answer
        except NotFound:
            post_ephemeral(client, channel_id, body["user"]["id"], thread_ts, GONE)
            return
        view = blocks.better_answer_modal(interaction_id, answer, channel_id, thread_ts or "")
        client.views_open(trigger_id=body["trigger_id"], view=view)

    def ack_now(ack: Ack) -> None:
        ack()

    def try_again(body: dict, client: WebClient) -> None:
        interaction_id = int(body["actions"][0]["value"])
        retry_answer(services, client, interaction_id, body["channel"]["id"], body["message"]["ts"])

    app.action(blocks.RETRY_ACTION)(ack=ack_now, lazy=[try_again])
