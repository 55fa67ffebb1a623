"""Events: mentions in channels, direct messages, and the AI-app assistant thread opening."""

from __future__ import annotations

from slack_bolt import Ack, App, BoltContext, Say, SetSuggestedPrompts
from slack_sdk import WebClient

from bot import metrics
from bot.answering import answer_question, question_from_event
from bot.services import Services

GREETING = "Hi! Ask me anything. Rate my answers with 👍 / 👎, or write a better one: that is how I learn."
SUGGESTED_PROMPTS = [
    {"title": "Explain a concept", "message": "Explain what a preference pair is, in two sentences."},
    {"title": "Write a command", "message": "How do I list the files of a folder sorted by size?"},
    {"title": "Review my text", "message": "Make this clearer: "},
]


def is_direct_message(event: dict) -> bool:
    return event.get("channel_type") == "im"


def register(app: App, services: Services) -> None:
    def ack_now(ack: Ack) -> None:
        ack()  # within Slack's 3 s; the answer follows in the lazy listener
        metrics.QUESTIONS_WAITING.inc()

    def answer(body: dict, event: dict, client: WebClient, context: BoltContext) -> None:
        metrics.QUESTIONS_WAITING.dec()
        question = question_from_event(body, event, context.bot_user_id)
        if question is not None:
            answer_question(services, client, question, context.bot_user_id)

    def greet(say: Say, set_suggested_prompts: SetSuggestedPrompts) -> None:
        say(GREETING)
        set_suggested_prompts(prompts=SUGGESTED_PROMPTS)

    def keep_context() -> None:
        """Nothing to keep: the thread itself is the context (Bolt acks for us)."""

    app.event("app_mention")(ack=ack_now, lazy=[answer])
    app.event("message", matchers=[is_direct_message])(ack=ack_now, lazy=[answer])
    app.event("assistant_thread_started")(greet)
    app.event("assistant_thread_context_changed")(keep_context)
