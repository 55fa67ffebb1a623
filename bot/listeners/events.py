"""Events: mentions in channels, direct messages, and the AI-app assistant thread opening.

A question is stored before the ack (milliseconds); everything that talks to Slack or the model happens
after it, on the answer queue's workers or the services' reply pool.
"""

from __future__ import annotations

from slack_bolt import Ack, App, BoltContext, Say, SetSuggestedPrompts
from slack_sdk import WebClient

from bot import metrics
from bot.answering import RATE_LIMITED, post_ephemeral, question_from_event, receive_question
from bot.services import Services

GREETING = "Hi! Ask me anything. Rate my answers with 👍 / 👎, or write a better one: that is how I learn."
SUGGESTED_PROMPTS = [
    {"title": "Explain a concept", "message": "Explain what a preference pair is, in two sentences."},
    {"title": "Write a command", "message": "How do I list the files of a folder sorted by size?"},
    {"title": "Review my text", "message": "Make this clearer: "},
]


def is_direct_message(event: dict) -> bool:
    return event.get("channel_type") == "im"


def greet(say: Say, set_suggested_prompts: SetSuggestedPrompts) -> None:
    say(GREETING)
    set_suggested_prompts(prompts=SUGGESTED_PROMPTS)


def register(app: App, services: Services) -> None:
    def receive(ack: Ack, body: dict, event: dict, client: WebClient, context: BoltContext) -> None:
        question = question_from_event(body, event, context.bot_user_id)
        if question is None:
            ack()
            return
        metrics.QUESTIONS.inc()
        if not services.limiter.allow(question.user_id):
            metrics.RATE_LIMITED.inc()
            ack()
            services.after_acks(post_ephemeral, client, question.channel_id, question.user_id, question.thread_ts,
                                RATE_LIMITED)
            return
        if receive_question(services, question) is not None:  # stored before the ack; None: delivered before
            services.question_stored(question.channel_id)
        ack()

    def thread_started(ack: Ack, say: Say, set_suggested_prompts: SetSuggestedPrompts) -> None:
        ack()
        services.in_background(greet, say, set_suggested_prompts)

    def keep_context(ack: Ack) -> None:
        ack()  # nothing to keep: the thread itself is the context

    app.event("app_mention")(receive)
    app.event("message", matchers=[is_direct_message])(receive)
    app.event("assistant_thread_started")(thread_started)
    app.event("assistant_thread_context_changed")(keep_context)
