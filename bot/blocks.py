"""Block Kit builders: plain functions that return the blocks and views the bot posts."""

from __future__ import annotations

import json
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ContextActionsBlock,
    ContextBlock,
    FeedbackButtonObject,
    FeedbackButtonsElement,
    InputBlock,
    MarkdownBlock,
    MarkdownTextObject,
    PlainTextInputElement,
    SectionBlock,
)
from slack_sdk.models.views import View

# Slack's limits: markdown blocks hold 12,000 characters per message; a plain-text input 3,000.
MESSAGE_CHARS = 12_000
INPUT_CHARS = 3_000
ANSWER_EVENT = "flywheel_answer"  # message metadata type that marks the bot's answers in a thread

VOTE_ACTION, BETTER_ACTION, RETRY_ACTION = "vote", "better_answer", "retry_answer"
BETTER_VIEW, BETTER_BLOCK, BETTER_INPUT = "better_answer", "better_answer", "text"
EMPTY_ANSWER = "_(the model returned an empty answer)_"


def cut_text(text: str, limit: int) -> tuple[str, str]:
    """The most of `text` that fits in `limit` characters and ends at a line or word break, and the rest
    (the break's whitespace dropped); ("", text) when no break fits."""
    if len(text) <= limit:
        return text, ""
    window = text[:limit + 1]  # a break just after the limit still leaves a head that fits
    cut = max(window.rfind(" "), window.rfind("\n"))
    if cut < 0:
        return "", text
    return text[:cut].rstrip(), text[cut:].lstrip()


def answer_metadata(interaction_id: int) -> dict[str, Any]:
    return {"event_type": ANSWER_EVENT, "event_payload": {"interaction_id": interaction_id}}


def feedback_blocks(interaction_id: int, served_model: str) -> list[dict[str, Any]]:
    """Slack's native thumbs for AI answers, a "Better answer" button, and which model answered."""
    thumbs = FeedbackButtonsElement(
        action_id=VOTE_ACTION,
        positive_button=FeedbackButtonObject(
            text="👍", accessibility_label="Good answer", value=f"up:{interaction_id}"
        ),
        negative_button=FeedbackButtonObject(
            text="👎", accessibility_label="Bad answer", value=f"down:{interaction_id}"
        ),
    )
    better = ButtonElement(text="✏️ Better answer", action_id=BETTER_ACTION, value=str(interaction_id))
    return [
        ContextActionsBlock(elements=[thumbs]).to_dict(),
        ActionsBlock(elements=[better]).to_dict(),
        ContextBlock(elements=[MarkdownTextObject(text=f"answered by `{served_model}`")]).to_dict(),
    ]


def answer_page(text: str, feedback: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The blocks of one message of an answer: its text, then the feedback controls if it is the last."""
    return [MarkdownBlock(text=text).to_dict(), *feedback]


def _retry_offer(interaction_id: int, text: str) -> list[dict[str, Any]]:
    retry = ButtonElement(text="Try again", action_id=RETRY_ACTION, value=str(interaction_id), style="primary")
    return [SectionBlock(text=MarkdownTextObject(text=text)).to_dict(), ActionsBlock(elements=[retry]).to_dict()]


def unavailable_blocks(interaction_id: int) -> list[dict[str, Any]]:
    return _retry_offer(interaction_id, "Sorry, I can't reach the model right now (it may be restarting). "
                                        "Your question is saved; please try again in a minute.")


def busy_blocks(interaction_id: int) -> list[dict[str, Any]]:
    return _retry_offer(interaction_id, "Sorry, too many questions are waiting for an answer right now. "
                                        "Your question is saved; please try again in a minute.")


def queued_notice(place: int) -> str:
    ahead = "you're next" if place == 1 else f"{place - 1} question(s) are ahead of yours"
    return f"Lots of questions right now: {ahead}. I'll answer in this thread as soon as I can."


def better_answer_modal(interaction_id: int, answer: str, channel_id: str, thread_ts: str) -> dict[str, Any]:
    """A modal prefilled with the bot's answer, for the user to rewrite."""
    field = PlainTextInputElement(
        action_id=BETTER_INPUT, multiline=True, initial_value=prefill(answer), max_length=INPUT_CHARS
    )
    metadata = json.dumps({"interaction_id": interaction_id, "channel_id": channel_id, "thread_ts": thread_ts})
    view = View(
        type="modal", callback_id=BETTER_VIEW, private_metadata=metadata,
        title="Better answer", submit="Save", close="Cancel",
        blocks=[
            SectionBlock(text="Rewrite the answer the way it should have been. Reviewers will see both."),
            InputBlock(block_id=BETTER_BLOCK, label="Your answer", element=field),
        ],
    )
    return view.to_dict()


def prefill(answer: str) -> str:
    return answer[:INPUT_CHARS]


def vote_confirmation(vote: str) -> str:
    thumb = "👍" if vote == "up" else "👎"
    return f"Thanks! Your {thumb} is counted. Click the other thumb to change it."


HELP_TEXT = (
    "*Flywheel* answers when you mention it in a channel or message it directly; "
    "rate its answers with 👍 / 👎 or write a *Better answer* and the model learns from it.\n"
    "• `/flywheel status`: the model version answering now, pairs waiting for review, the last training run\n"
    "• `/flywheel help`: this message"
)
