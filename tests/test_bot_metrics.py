"""The bot's metrics count what really happens: the real Bolt app over signed HTTP, the session's vLLM, and
Slack's Web API stand-in refusing streaming as Slack does for an app without the AI-app feature (a real
Slack error the bot recovers from). Counters are read as increases: other tests share the process."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from slack_stub import BOT_USER_ID, RunningBot, SlackStub, app_mention, event_callback
from slack_support import (
    ALICE,
    BOB,
    CHANNEL,
    TOKEN,
    ask_until_answered,
    bot_settings,
    eventually,
    rows,
    vote,
    write_better_answer,
)

from serving.testing import free_port
from storage.models import Interaction

pytestmark = pytest.mark.vllm


class Samples:
    """Metric samples as they change from now on."""

    def __init__(self):
        self.start = {self._key(s): s.value for family in REGISTRY.collect() for s in family.samples}

    @staticmethod
    def _key(sample) -> tuple:
        return sample.name, frozenset(sample.labels.items())

    def increase(self, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return (REGISTRY.get_sample_value(name, labels) or 0.0) - self.start.get(key, 0.0)


def mention(bot: RunningBot, slack: SlackStub, text: str) -> None:
    message = slack.user_message(CHANNEL, ALICE, f"<@{BOT_USER_ID}> {text}")
    assert bot.send_event(event_callback(app_mention(message, CHANNEL))).status_code == 200


def test_questions_answers_votes_and_slack_errors_are_counted(tmp_path, sqlite_url, base_model_dir, vllm_server):
    samples = Samples()
    with SlackStub(TOKEN, streaming=False) as slack, RunningBot(
        bot_settings(tmp_path, sqlite_url, base_model_dir, slack, vllm_server.url, rate_limit_per_minute=1)
    ) as bot:
        answer = ask_until_answered(bot, slack)
        [interaction] = eventually(lambda: [i for i in rows(bot, Interaction) if i.message_ts])
        assert vote(bot, BOB, answer, "down").status_code == 200
        assert write_better_answer(bot, slack, BOB, answer, "Paris, on the Seine.").text == ""
        ephemeral = len(slack.calls_to("chat.postEphemeral"))
        mention(bot, slack, "And of Italy?")  # a second question within the minute: over the limit of 1
        slack.wait_for("chat.postEphemeral", ephemeral + 1)  # "You're asking faster than I can think"

    assert samples.increase("flywheel_bot_questions_total") == 2
    assert samples.increase("flywheel_bot_rate_limited_total") == 1
    assert samples.increase("flywheel_bot_answers_completed_total") == 1
    assert samples.increase("flywheel_bot_answer_seconds_count") == 1
    assert samples.increase("flywheel_bot_first_words_seconds_count") == 1
    assert samples.increase("flywheel_bot_answer_tokens_sum") == interaction.completion_tokens > 0
    assert samples.increase("flywheel_bot_votes_total", vote="down", model="base") == 1
    assert samples.increase("flywheel_bot_better_answers_total") == 1
    assert samples.increase("flywheel_bot_ack_seconds_count", kind="event") == 2
    assert samples.increase("flywheel_bot_ack_seconds_count", kind="action") == 2  # the vote, "Better answer"
    assert samples.increase("flywheel_bot_ack_seconds_count", kind="view") == 1
    refused = {"method": "chat.startStream", "error": "missing_scope"}  # then the bot posts and edits instead
    assert samples.increase("flywheel_bot_slack_api_errors_total", **refused) == 1
    assert REGISTRY.get_sample_value("flywheel_bot_answers_in_progress") == 0
    assert REGISTRY.get_sample_value("flywheel_bot_questions_waiting") == 0


def test_a_model_outage_is_counted_as_a_failed_answer(tmp_path, sqlite_url, base_model_dir):
    samples = Samples()
    closed = f"http://127.0.0.1:{free_port()}"
    with SlackStub(TOKEN) as slack, RunningBot(
        bot_settings(tmp_path, sqlite_url, base_model_dir, slack, closed)
    ) as bot:
        mention(bot, slack, "Anyone there?")
        eventually(lambda: samples.increase("flywheel_bot_answers_failed_total", reason="model_unavailable") == 1)
    assert samples.increase("flywheel_bot_answers_completed_total") == 0
    # Every reason is a series before it first happens: a rate of 0 on the dashboard, not "no data".
    assert REGISTRY.get_sample_value("flywheel_bot_answers_failed_total", {"reason": "slack_error"}) is not None
