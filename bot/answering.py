"""The answering flow. A listener stores the question before Slack is acked (`receive_question`); the
process that owns its channel puts it in line (bot/question_feed.py); a worker of the answer queue then
reads the thread for context, asks the model and streams the answer into the thread (`answer_job`,
bot/streaming.py), and records it once, complete.

A question acked is a question stored: a failed generation leaves it marked failed with Try again, a full
queue likewise (with the reason), and one a stopped bot left unanswered waits in the database for the next
start. A redelivered event (same event id) finds the stored question and stops there.
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
from bot.answer_queue import AnswerJob
from bot.services import Services
from bot.streaming import AnswerStream, answer_stream
from serving.client import Answer, ModelUnavailable, answer
from storage.db import read_scope
from storage.interactions import (
    complete_interaction,
    fail_interaction,
    get_interaction,
    record_question,
    set_message_ts,
    set_prompt_messages,
)
from storage.models import InteractionStatus

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 3  # a cautious estimate (English averages about 4): the budget errs on the short side
TOKENS_PER_MESSAGE = 8  # chat-template overhead of one message
MAX_THREAD_PAGES = 10
THINKING = "is thinking…"
RATE_LIMITED = "You're asking faster than I can think: please wait a minute and ask again."
ACK_STORE_S = 2.0  # Slack waits 3 s for the ack: retries of a question's store end before that
# An answer's own writes go through the group commit too (each a lock turn less under a burst), and may wait
# longer for a database that restarts: the answer is written already.
ANSWER_STORE_S = 30.0


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


def text_field(payload: dict, name: str, *, required: bool = True) -> str:
    """A string field of a Slack payload. A signed payload whose field is missing or of another type is
    malformed: ValueError, which the app answers with 400 (bot/listeners/__init__.py)."""
    value = payload.get(name)
    if isinstance(value, str) and (value or not required):
        return value
    if value is None and not required:
        return ""
    raise ValueError(f"the payload's {name!r} is not a string")


def question_from_event(body: dict, event: dict, bot_user_id: str | None) -> Question | None:
    """The question in a mention or direct message; None for bots (no loops), edits and empty text."""
    if is_from_bot(event, bot_user_id) or event.get("subtype") or not event.get("user"):
        return None
    text = clean_text(text_field(event, "text", required=False), bot_user_id)
    if not text:
        return None
    ts = text_field(event, "ts")
    return Question(
        team_id=text_field(body, "team_id", required=False) or text_field(event, "team", required=False),
        channel_id=text_field(event, "channel"), thread_ts=text_field(event, "thread_ts", required=False) or ts,
        ts=ts, user_id=text_field(event, "user"), text=text, event_id=text_field(body, "event_id", required=False) or None,
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


@dataclass(frozen=True)
class Where:
    """Where an answer goes, and to whom."""

    channel_id: str
    thread_ts: str
    user_id: str
    team_id: str = ""


def thread_history(
    client: WebClient, where: Where, question_ts: str, bot_user_id: str | None
) -> list[dict[str, str]]:
    """The thread before the question, as chat turns (the bot's answers as the assistant's)."""
    earlier: list[dict] = []
    try:
        pages = client.conversations_replies(
            channel=where.channel_id, ts=where.thread_ts, limit=200, include_all_metadata=True
        )
        for number, page in enumerate(pages):
            earlier += [m for m in page["messages"] if float(m["ts"]) < float(question_ts)]
            if number + 1 >= MAX_THREAD_PAGES:
                break
    except SlackApiError as exc:
        log.warning("could not read thread %s: %s", where.thread_ts, exc.response.get("error"))
    turns = [turn for turn in (_as_turn(m, bot_user_id) for m in earlier) if turn]
    return _merge_turns(turns)


# --- receiving: in the listener, before the ack --------------------------------------------------


def receive_question(services: Services, question: Question) -> int | None:
    """Store the question; returns its interaction id, or None when the event was delivered before.
    A database that is restarting is retried for a moment; if it stays down this raises, Slack is not
    acked and delivers the event again later."""
    messages = [{"role": "user", "content": services.storable(question.text)}]

    def store(session) -> int | None:
        return record_question(
            session, "slack", (question.team_id, question.channel_id, question.thread_ts), messages,
            user_id=question.user_id, event_id=question.event_id, question_ts=question.ts,
        )

    return services.writes.run(store, within_s=ACK_STORE_S)


# --- answering: on a worker of the answer queue ---------------------------------------------------


def answer_job(services: Services, client: WebClient, job: AnswerJob) -> None:
    """Answer one stored question in its thread (in place of `job.replace_ts` for Try again)."""
    services.acks.yield_to_acks()
    with read_scope(services.engine) as session:
        interaction = get_interaction(session, job.interaction_id)
        if interaction.status is InteractionStatus.ok:
            return  # a second Try again after the answer arrived
        conversation = interaction.conversation
        where = Where(conversation.channel_id, conversation.thread_ts, interaction.user_id, conversation.team_id)
        messages, question_ts = interaction.prompt_messages, interaction.question_ts
    if len(messages) == 1:  # the question alone: read its thread and fit both to the context, once
        messages = _prompt_with_thread(services, client, where, messages, question_ts, job.bot_user_id)
        _store(services, lambda session: set_prompt_messages(session, job.interaction_id, messages))
    _show_thinking(client, where)
    generate_and_post(services, client, job.interaction_id, messages, where, replace_ts=job.replace_ts)


def _prompt_with_thread(
    services: Services, client: WebClient, where: Where, question: list[dict[str, str]], question_ts: str | None,
    bot_user_id: str | None,
) -> list[dict[str, str]]:
    history = []
    if question_ts and question_ts != where.thread_ts:
        history = [{**turn, "content": services.storable(turn["content"])}
                   for turn in thread_history(client, where, question_ts, bot_user_id)]
    return fit_to_context(_merge_turns(history + question), context_budget(services.settings))


def generate_and_post(
    services: Services, client: WebClient, interaction_id: int, messages: list[dict[str, str]], where: Where,
    *, replace_ts: str | None = None,
) -> None:
    """Stream the answer into the thread (in place of `replace_ts`, if given) and record it once, complete."""
    stream = answer_stream(
        services.settings, services.pacer, client, interaction_id, where.channel_id, where.thread_ts,
        user_id=where.user_id, team_id=where.team_id, replace_ts=replace_ts,
    )
    started = time.perf_counter()
    try:
        reply = answer(services.settings, messages, user_id=where.user_id,
                       on_token=metrics.first_words(stream.write, started))
    except Exception as exc:  # noqa: BLE001 - whatever failed, the question stays stored as failed
        metrics.answer_failed(exc)
        if not isinstance(exc, ModelUnavailable):
            log.exception("answering interaction %s failed", interaction_id)
        stream.abort()
        _store(services, lambda session: fail_interaction(session, interaction_id, f"{type(exc).__name__}: {exc}"))
        offer_retry(services, client, blocks.unavailable_blocks(interaction_id), where, replace_ts)
        return
    services.after_answer(_finish_answer, services, stream, interaction_id, reply, started)


def _finish_answer(services: Services, stream: AnswerStream, interaction_id: int, reply: Answer,
                   started: float) -> None:
    """Record the answer, complete, and show its rest with the feedback buttons at the channel's next turn
    (up to a second away): off the answer worker, which meanwhile starts on the next question."""
    text = services.storable(reply.text.strip())
    _store(services, lambda session: complete_interaction(
        session, interaction_id, answer=text, served_model=reply.served_model,
        model_version_id=reply.model_version_id, latency_ms=reply.latency_ms,
        prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
    ))
    try:
        last_ts = stream.finish(blocks.feedback_blocks(interaction_id, reply.served_model))
    except SlackApiError as exc:  # Slack still refused after the retries: the answer is stored, not shown
        metrics.answer_failed(exc)
        log.warning("answer %s is stored but Slack refused to show it: %s", interaction_id, exc.response.get("error"))
        return
    metrics.answer_completed(started, reply.completion_tokens)
    _store(services, lambda session: set_message_ts(session, interaction_id, last_ts))


def _store(services: Services, write) -> None:
    """Commit one of an answer's writes with whatever else is waiting (questions, votes, other answers)."""
    services.writes.run(write, within_s=ANSWER_STORE_S)


def offer_retry(services: Services, client: WebClient, page: list[dict], where: Where, replace_ts: str | None) -> None:
    """A notice with a Try again button, in the thread (or in place of the message Try again was under)."""
    text = page[0]["text"]["text"]
    with services.pacer.turn(where.channel_id):
        if replace_ts:
            client.chat_update(channel=where.channel_id, ts=replace_ts, text=text, blocks=page)
        else:
            client.chat_postMessage(channel=where.channel_id, thread_ts=where.thread_ts, text=text, blocks=page)


def _show_thinking(client: WebClient, where: Where) -> None:
    """Slack's AI-app "thinking…" status; cleared by Slack when the answer is posted. Best effort:
    workspaces without the assistant feature refuse it outside assistant threads."""
    try:
        client.assistant_threads_setStatus(channel_id=where.channel_id, thread_ts=where.thread_ts, status=THINKING)
    except SlackApiError as exc:
        log.debug("no thinking status in %s: %s", where.channel_id, exc.response.get("error"))


def post_ephemeral(client: WebClient, channel_id: str, user_id: str, thread_ts: str | None, text: str) -> None:
    client.chat_postEphemeral(channel=channel_id, user=user_id, thread_ts=thread_ts, text=text)
