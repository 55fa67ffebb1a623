"""The answering flow: a Slack question -> thread context -> stored interaction -> model -> answer streamed
into the thread (bot/streaming.py).

Runs after Slack has been acked (a lazy listener), so generation may take as long as the model needs.
The interaction is stored before the model is asked: a failed generation still leaves the question,
and a redelivered event (same event id) finds it and stops there.
"""

from __future__ import annotations

import html
import logging
import re
import time
from dataclasses import dataclass

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import blocks, metrics
from bot.ratelimit import Decision
from bot.services import Services
from bot.streaming import answer_stream
from serving.client import ModelUnavailable, answer
from storage.db import session_scope
from storage.interactions import (
    complete_interaction,
    fail_interaction,
    get_interaction,
    get_or_create_conversation,
    set_message_ts,
    start_interaction,
)
from storage.models import InteractionStatus

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 3  # a cautious estimate (English averages about 4): the budget errs on the short side
TOKENS_PER_MESSAGE = 8  # chat-template overhead of one message
MAX_THREAD_PAGES = 10
THINKING = "is thinking…"
RATE_LIMITED = "You're asking faster than I can think: please wait a minute and ask again."


@dataclass(frozen=True)
class Question:
    team_id: str
    channel_id: str
    thread_ts: str  # the thread the answer goes to
    ts: str  # the user's message
    user_id: str
    text: str
    event_id: str | None


def clean_text(text: str, bot_user_id: str | None) -> str:
    """Slack's markup to plain text: the bot's own mention removed, entities unescaped."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}>\s*", "", text)
    return html.unescape(text).strip()


def is_from_bot(event: dict, bot_user_id: str | None) -> bool:
    return bool(event.get("bot_id") or event.get("subtype") == "bot_message" or event.get("user") == bot_user_id)


def question_from_event(body: dict, event: dict, bot_user_id: str | None) -> Question | None:
    """The question in a mention or direct message; None for bots (no loops), edits and empty text."""
    if is_from_bot(event, bot_user_id) or event.get("subtype") or not event.get("user"):
        return None
    text = clean_text(event.get("text") or "", bot_user_id)
    if not text:
        return None
    return Question(
        team_id=body.get("team_id") or event.get("team") or "", channel_id=event["channel"],
        thread_ts=event.get("thread_ts") or event["ts"], ts=event["ts"], user_id=event["user"],
        text=text, event_id=body.get("event_id"),
    )


# --- context -------------------------------------------------------------------------------------


def estimate_tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN + TOKENS_PER_MESSAGE


def context_budget(settings) -> int:
    """Tokens the conversation may use: the model's context less the answer and the system prompt."""
    return settings.vllm_max_model_len - settings.max_answer_tokens - estimate_tokens(settings.system_prompt)


def fit_to_context(messages: list[dict[str, str]], budget_tokens: int) -> list[dict[str, str]]:
    """Keep the newest messages that fit, oldest dropped first; the question itself is always kept
    (cut if it alone is too long), and the kept part starts with a user turn as chat templates expect."""
    question = messages[-1]
    room = max(budget_tokens - TOKENS_PER_MESSAGE, 1) * CHARS_PER_TOKEN
    kept = [{**question, "content": question["content"][:room]}]
    used = estimate_tokens(kept[0]["content"])
    for message in reversed(messages[:-1]):
        used += estimate_tokens(message["content"])
        if used > budget_tokens:
            break
        kept.insert(0, message)
    while kept[0]["role"] != "user":
        kept.pop(0)
    return kept


def _merge_turns(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Consecutive messages of one role become one turn (an answer split over messages, say)."""
    merged: list[dict[str, str]] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1] = {**merged[-1], "content": merged[-1]["content"] + "\n\n" + message["content"]}
        else:
            merged.append(message)
    return merged


def _as_turn(message: dict, bot_user_id: str | None) -> dict[str, str] | None:
    if message.get("metadata", {}).get("event_type") == blocks.ANSWER_EVENT:
        return {"role": "assistant", "content": message.get("text", "")}
    if is_from_bot(message, bot_user_id) or message.get("subtype"):
        return None  # other bots, and the bot's own notices (apologies): not conversation
    text = clean_text(message.get("text") or "", bot_user_id)
    return {"role": "user", "content": text} if text else None


def thread_history(client: WebClient, question: Question, bot_user_id: str | None) -> list[dict[str, str]]:
    """The thread before the question, as chat turns (the bot's answers as the assistant's)."""
    if question.thread_ts == question.ts:
        return []
    earlier: list[dict] = []
    try:
        pages = client.conversations_replies(
            channel=question.channel_id, ts=question.thread_ts, limit=200, include_all_metadata=True
        )
        for number, page in enumerate(pages):
            earlier += [m for m in page["messages"] if float(m["ts"]) < float(question.ts)]
            if number + 1 >= MAX_THREAD_PAGES:
                break
    except SlackApiError as exc:
        log.warning("could not read thread %s: %s", question.thread_ts, exc.response.get("error"))
    turns = [turn for turn in (_as_turn(m, bot_user_id) for m in earlier) if turn]
    return _merge_turns(turns)


# --- the flow ------------------------------------------------------------------------------------


def answer_question(services: Services, client: WebClient, question: Question, bot_user_id: str | None) -> None:
    decision = services.limiter.check(question.user_id, question.event_id)
    if decision is Decision.seen:
        return
    metrics.QUESTIONS.inc()
    if decision is Decision.deny:
        metrics.RATE_LIMITED.inc()
        post_ephemeral(client, question.channel_id, question.user_id, question.thread_ts, RATE_LIMITED)
        return
    history = thread_history(client, question, bot_user_id)
    turns = _merge_turns(history + [{"role": "user", "content": question.text}])
    messages = [
        {"role": m["role"], "content": services.storable(m["content"])}
        for m in fit_to_context(turns, context_budget(services.settings))
    ]
    with session_scope(services.engine) as session:
        conversation = get_or_create_conversation(
            session, "slack", question.team_id, question.channel_id, question.thread_ts
        )
        interaction = start_interaction(
            session, conversation, messages, user_id=question.user_id, event_id=question.event_id
        )
        if interaction is None:
            log.info("event %s was delivered again: answered already", question.event_id)
            return
        session.flush()
        interaction_id = interaction.id
    _show_thinking(client, question.channel_id, question.thread_ts)
    generate_and_post(services, client, interaction_id, question.channel_id, question.thread_ts)


def retry_answer(services: Services, client: WebClient, interaction_id: int, channel_id: str, message_ts: str) -> None:
    """The "Try again" button: answer the stored question again, in place of the apology."""
    with session_scope(services.engine) as session:
        interaction = get_interaction(session, interaction_id)
        if interaction.status is InteractionStatus.ok:
            return  # a second click after the answer arrived
        thread_ts = interaction.conversation.thread_ts
    _show_thinking(client, channel_id, thread_ts)
    generate_and_post(services, client, interaction_id, channel_id, thread_ts, replace_ts=message_ts)


@metrics.ANSWERS_IN_PROGRESS.track_inprogress()
def generate_and_post(
    services: Services, client: WebClient, interaction_id: int, channel_id: str, thread_ts: str,
    *, replace_ts: str | None = None,
) -> None:
    """Stream the answer into the thread (in place of `replace_ts`, if given) and record it once, complete."""
    started = time.perf_counter()
    with session_scope(services.engine) as session:
        interaction = get_interaction(session, interaction_id)
        messages, user_id, team_id = interaction.prompt_messages, interaction.user_id, interaction.conversation.team_id
    stream = answer_stream(
        services.settings, client, interaction_id, channel_id, thread_ts, user_id=user_id, team_id=team_id,
        replace_ts=replace_ts,
    )
    try:
        write = metrics.first_words(stream.write, started)
        reply = answer(services.settings, messages, user_id=user_id, on_token=write)
    except Exception as exc:  # noqa: BLE001 - whatever failed, the question stays stored as failed
        metrics.answer_failed(exc)
        if not isinstance(exc, ModelUnavailable):
            log.exception("answering interaction %s failed", interaction_id)
        stream.abort()
        with session_scope(services.engine) as session:
            fail_interaction(session, interaction_id, f"{type(exc).__name__}: {exc}")
        _post_unavailable(client, interaction_id, channel_id, thread_ts, replace_ts)
        return
    with session_scope(services.engine) as session:
        complete_interaction(
            session, interaction_id, answer=services.storable(reply.text.strip()), served_model=reply.served_model,
            model_version_id=reply.model_version_id, latency_ms=reply.latency_ms,
            prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
        )
    last_ts = stream.finish(blocks.feedback_blocks(interaction_id, reply.served_model))
    metrics.answer_completed(started, reply.completion_tokens)
    with session_scope(services.engine) as session:
        set_message_ts(session, interaction_id, last_ts)


def _post_unavailable(
    client: WebClient, interaction_id: int, channel_id: str, thread_ts: str, replace_ts: str | None
) -> None:
    page = blocks.unavailable_blocks(interaction_id)
    text = page[0]["text"]["text"]
    if replace_ts:
        client.chat_update(channel=channel_id, ts=replace_ts, text=text, blocks=page)
    else:
        client.chat_postMessage(channel=channel_id, thread_ts=thread_ts, text=text, blocks=page)


def _show_thinking(client: WebClient, channel_id: str, thread_ts: str) -> None:
    """Slack's AI-app "thinking…" status; cleared by Slack when the answer is posted. Best effort:
    workspaces without the assistant feature refuse it outside assistant threads."""
    try:
        client.assistant_threads_setStatus(channel_id=channel_id, thread_ts=thread_ts, status=THINKING)
    except SlackApiError as exc:
        log.debug("no thinking status in %s: %s", channel_id, exc.response.get("error"))


def post_ephemeral(client: WebClient, channel_id: str, user_id: str, thread_ts: str | None, text: str) -> None:
    client.chat_postEphemeral(channel=channel_id, user=user_id, thread_ts=thread_ts, text=text)
