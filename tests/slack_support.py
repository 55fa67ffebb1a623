"""Slack-side helpers shared by the bot and end-to-end tests: test credentials, the bot's settings,
asking in a channel, clicking the buttons of a posted answer, and reading what the bot stored."""

from __future__ import annotations

import time

from slack_stub import BOT_USER_ID, RunningBot, SlackStub, app_mention, block_actions, event_callback, view_submission
from sqlalchemy import select

from bot import blocks
from flywheel.settings import load_settings
from storage.db import session_scope

TOKEN = "xoxb-1111111111-2222222222-flywheelTestToken"
SECRET = "flywheel-test-signing-secret-8f3a"
CHANNEL, DM, ALICE, BOB = "C0GENERAL", "D0ALICE", "U0ALICE", "U0BOB"
QUESTION = "What is the capital of France?"
ACK_LIMIT_S = 3.0  # Slack's
REPLIES = ("chat.stopStream", "chat.postMessage")  # the calls that finish a reply of the bot



def bot_settings(tmp_path, database_url, base_model_dir, slack, vllm_url, **overrides):
    values = dict(
        home=tmp_path / "home", database_url=database_url, base_model_path=base_model_dir, vllm_url=vllm_url,
        slack_bot_token=TOKEN, slack_signing_secret=SECRET, slack_api_url=slack.url, bot_mode="http",
        max_answer_tokens=24, request_retries=0, stream_interval_s=0, stream_chunk_tokens=1,  # an update per token
    )
    return load_settings(**{**values, **overrides})


def rows(bot: RunningBot, model) -> list:
    with session_scope(bot.services.engine) as session:
        return list(session.scalars(select(model).order_by(model.id)))


def eventually(check, timeout: float = 10.0):
    """What `check` returns once it is truthy: the bot finishes its work after it has posted."""
    deadline = time.monotonic() + timeout
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert result, "condition not reached in time"
    return result


def posted(slack: SlackStub, method: str = "chat.postMessage") -> list[dict]:
    return [call.params for call in slack.calls_to(method)]


def wait_for_reply(slack: SlackStub, before: int) -> dict:
    """The bot's next finished reply after `before` of them: a streamed answer, or a posted message
    (an apology, say); returns it as Slack stores it."""
    slack.wait_for(REPLIES, before + 1)
    return slack.messages[-1]


def ask(bot: RunningBot, slack: SlackStub, text: str = QUESTION, **event_options) -> dict:
    """Mention the bot in a channel; returns the answer message as Slack stores it."""
    before = len(slack.calls_to(REPLIES))
    message = slack.user_message(CHANNEL, ALICE, f"<@{BOT_USER_ID}> {text}")
    started = time.monotonic()
    response = bot.send_event(event_callback(app_mention(message, CHANNEL)), **event_options)
    assert response.status_code == 200 and time.monotonic() - started < ACK_LIMIT_S
    return wait_for_reply(slack, before)


def element(message: dict, action_id: str) -> dict:
    for block in message["blocks"]:
        for item in block.get("elements", []):
            if item.get("action_id") == action_id:
                return {**item, "block_id": block.get("block_id", "b")}
    raise AssertionError(f"no {action_id} in {message['blocks']}")


def thumb(message: dict, which: str) -> dict:
    buttons = element(message, blocks.VOTE_ACTION)
    chosen = buttons["positive_button" if which == "up" else "negative_button"]
    return {"type": "feedback_buttons", "action_id": blocks.VOTE_ACTION, "block_id": buttons["block_id"],
            "value": chosen["value"], "text": chosen["text"]}


def button(message: dict, action_id: str) -> dict:
    found = element(message, action_id)
    return {"type": "button", "action_id": action_id, "block_id": found["block_id"], "value": found["value"],
            "text": found["text"]}


def vote(bot: RunningBot, user: str, message: dict, which: str):
    """`user` clicks thumbs up or down under an answer."""
    return bot.send_interaction(block_actions(user, CHANNEL, message, thumb(message, which)))


def write_better_answer(bot: RunningBot, slack: SlackStub, user: str, message: dict, text: str):
    """`user` clicks "Better answer" under `message` and submits `text` in the modal that opens."""
    opened = len(slack.calls_to("views.open"))
    bot.send_interaction(block_actions(user, CHANNEL, message, button(message, blocks.BETTER_ACTION)))
    view = slack.wait_for("views.open", opened + 1)[-1].params["view"]
    values = {blocks.BETTER_BLOCK: {blocks.BETTER_INPUT: {"type": "plain_text_input", "value": text}}}
    return bot.send_interaction(view_submission(user, view, values))


# Secrets as a deployment sets them: none may ever appear in an output or a log file.
SECRETS = {"SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET,
           "SLACK_APP_TOKEN": "xapp-1-A0FLYWHEEL-5555555555-flywheelSecretAppToken",
           "FLYWHEEL_ADMIN_PASSWORD": "admin-password-never-logged-7c1"}


def leaked_secrets(*sources) -> list[str]:
    """The secrets found in these texts, or in any file below these folders."""
    texts = []
    for source in sources:
        if isinstance(source, str):
            texts.append(source)
        else:
            texts += [path.read_text(errors="replace") for path in source.rglob("*") if path.is_file()
                      and path.suffix in ("", ".log", ".out", ".txt", ".json", ".jsonl")]
    return [name for name, value in SECRETS.items() if any(value in text for text in texts)]
def finished_answer(slack: SlackStub, question_ts: str) -> dict | None:
    """The bot's answer in the thread of `question_ts` once it carries its vote buttons (with streaming
    refused, the first words are posted and edited until then)."""
    answers = slack.answers_by_thread().get(question_ts)
    return answers[-1] if answers else None


def ask_until_answered(bot, slack: SlackStub, text: str = QUESTION, timeout: float = 300) -> dict:
    """Mention the bot in a channel; returns its finished answer as Slack stores it, however it was written."""
    message = slack.user_message(CHANNEL, ALICE, f"<@{BOT_USER_ID}> {text}")
    assert bot.send_event(event_callback(app_mention(message, CHANNEL))).status_code == 200
    return eventually(lambda: finished_answer(slack, message["ts"]), timeout)
