"""The Slack bot's Prometheus metrics, with the small hooks that observe what no listener sees: the time
Bolt takes to ack a request, and what each Slack Web API call ended with."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram
from slack_bolt import App
from slack_bolt.request import BoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import RetryHandler

from serving.errors import ModelUnavailable, ServingError

QUESTIONS = Counter("flywheel_bot_questions_total", "Questions people asked the bot (mentions and direct messages).")
ANSWERS_COMPLETED = Counter("flywheel_bot_answers_completed_total", "Answers finished in Slack, with their buttons.")
ANSWERS_FAILED = Counter("flywheel_bot_answers_failed_total", "Answers that failed, by reason.", ["reason"])
FAILURE_REASONS = ("model_unavailable", "model_error", "slack_error", "internal_error")
ACK_SECONDS = Histogram(
    "flywheel_bot_ack_seconds", "Time from a Slack request's arrival to its ack (Slack waits 3 s), by request kind.",
    ["kind"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5),
)
FIRST_WORDS_SECONDS = Histogram(
    "flywheel_bot_first_words_seconds", "Time from the start of an answer to its first words shown in Slack.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60),
)
ANSWER_SECONDS = Histogram(
    "flywheel_bot_answer_seconds", "Time from the start of an answer to the finished answer in Slack.",
    buckets=(0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300),
)
ANSWER_TOKENS = Histogram(
    "flywheel_bot_answer_tokens", "Tokens the model generated per answer.",
    buckets=(8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
)
VOTES = Counter("flywheel_bot_votes_total", "👍 / 👎 clicks, by vote and the model that answered.", ["vote", "model"])
BETTER_ANSWERS = Counter("flywheel_bot_better_answers_total", "Better answers people wrote and saved.")
RATE_LIMITED = Counter("flywheel_bot_rate_limited_total", "Questions refused because the person asked too fast.")
SLACK_API_ERRORS = Counter(
    "flywheel_bot_slack_api_errors_total", "Slack Web API calls that failed, by method and error.", ["method", "error"]
)
SLACK_API_RETRIES = Counter(
    "flywheel_bot_slack_api_retries_total", "Slack Web API calls sent again (rate limited, connection, server error)."
)
# Summed over the bot's live processes when it runs several (prometheus_client's multiprocess mode).
QUESTIONS_WAITING = Gauge("flywheel_bot_questions_waiting", "Questions acked and waiting for an answer worker.",
                          multiprocess_mode="livesum")
ANSWERS_IN_PROGRESS = Gauge("flywheel_bot_answers_in_progress", "Answers being generated and written into Slack now.",
                            multiprocess_mode="livesum")

for _reason in FAILURE_REASONS:  # every reason is a series from the start: a rate of 0, not "no data"
    ANSWERS_FAILED.labels(_reason)


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, ModelUnavailable):
        return "model_unavailable"
    if isinstance(exc, ServingError):
        return "model_error"
    return "slack_error" if isinstance(exc, SlackApiError) else "internal_error"


def answer_failed(exc: BaseException) -> None:
    ANSWERS_FAILED.labels(failure_reason(exc)).inc()


def answer_queue_changed(waiting: int, answering: int) -> None:
    QUESTIONS_WAITING.set(waiting)
    ANSWERS_IN_PROGRESS.set(answering)


def answer_completed(started: float, completion_tokens: int) -> None:
    ANSWERS_COMPLETED.inc()
    ANSWER_SECONDS.observe(time.perf_counter() - started)
    ANSWER_TOKENS.observe(completion_tokens)


def first_words(write: Callable[[str], None], started: float) -> Callable[[str], None]:
    """`write` (a stream's), observing the time to the first piece with words in it once it is written."""
    pending = [True]

    def timed(piece: str) -> None:
        write(piece)
        if pending[0] and piece.strip():
            pending[0] = False
            FIRST_WORDS_SECONDS.observe(time.perf_counter() - started)

    return timed


def request_kind(body: dict) -> str:
    if "command" in body:
        return "command"
    kind = body.get("type", "")
    return {"event_callback": "event", "block_actions": "action", "view_submission": "view"}.get(kind, "other")


def time_acks(app: App) -> None:
    """Observe each request's time to ack. Bolt's adapters, HTTP and Socket Mode alike, send Slack what
    `dispatch` returns, and it returns as soon as the listener acks (the work goes on after)."""
    dispatch = app.dispatch

    def timed(req: BoltRequest):
        started = time.perf_counter()
        try:
            return dispatch(req)
        finally:
            ACK_SECONDS.labels(request_kind(req.body or {})).observe(time.perf_counter() - started)

    app.dispatch = timed


class SlackApiObserver(RetryHandler):
    """Counts how each Slack Web API call ended. slack_sdk has no per-call hook, but it shows every response
    (200s included) to its retry handlers in turn until one retries: placed last, this one sees each call's
    final attempt. Bolt copies the app client's handlers into the client it gives every listener."""

    def __init__(self) -> None:
        super().__init__(max_retry_count=1_000_000)  # it never retries; only so that it is always asked

    def _can_retry(self, *, state, request, response=None, error=None) -> bool:
        if state.current_attempt:
            SLACK_API_RETRIES.inc(state.current_attempt)
        error_code = _error_code(response, error)
        if error_code:
            SLACK_API_ERRORS.labels(request.url.split("?")[0].rsplit("/", 1)[-1], error_code).inc()
        return False


def _error_code(response, error) -> str | None:
    if response is None:
        return "connection_error" if error is not None else None
    if response.status_code != 200:
        return f"http_{response.status_code}"
    body = response.body or {}
    return None if body.get("ok", True) else str(body.get("error") or "unknown")
