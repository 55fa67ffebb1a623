"""The "Better answer" modal's submission: stored as an alternative + a pending preference pair."""

from __future__ import annotations

import json

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot import blocks, metrics
from bot.answering import post_ephemeral, text_field
from bot.services import Services
from storage.db import session_scope
from storage.errors import InvalidInput, NotFound
from storage.interactions import get_interaction, record_alternative

SAVED = "Thanks! Your better answer is saved; a reviewer will look at it before the model learns from it."


def _refusal(exc: Exception) -> str:
    text = str(exc)
    return text[:1].upper() + text[1:] + "."


def save_better_answer(services: Services, interaction_id: int, user_id: str, text: str) -> str | None:
    """Store it; returns why it was refused, or None when it was saved."""
    try:
        with session_scope(services.engine) as session:
            answer = get_interaction(session, interaction_id).answer
            if text.strip() and text.strip() == blocks.prefill(answer).strip():
                raise InvalidInput("the better answer is the same as the bot's answer")
            record_alternative(session, interaction_id, user_id, services.storable(text))
    except (InvalidInput, NotFound) as exc:
        return _refusal(exc)
    return None


def register(app: App, services: Services) -> None:
    @app.view(blocks.BETTER_VIEW)
    def submit(ack: Ack, body: dict, view: dict, client: WebClient) -> None:
        where = json.loads(view["private_metadata"])  # what the bot put there when it opened the modal
        text = text_field(view["state"]["values"][blocks.BETTER_BLOCK][blocks.BETTER_INPUT], "value", required=False)
        user_id = text_field(body["user"], "id")
        refusal = save_better_answer(services, int(where["interaction_id"]), user_id, text)
        if refusal:  # shown under the text field; the modal stays open with the user's text
            ack(response_action="errors", errors={blocks.BETTER_BLOCK: refusal})
            return
        ack()
        metrics.BETTER_ANSWERS.inc()
        services.after_acks(post_ephemeral, client, where["channel_id"], user_id, where["thread_ts"] or None, SAVED)
