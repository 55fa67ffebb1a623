"""bot/slack_manifest.yaml against the app: every subscribed event, command and interaction is handled by a
listener (and nothing handled is left unsubscribed), and the scopes are exactly what the app calls need."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from slack_stub import (
    RunningBot,
    SlackStub,
    block_actions,
    event_callback,
    slash_command,
    view_submission,
)
from test_bot import ALICE, CHANNEL, DM, SECRET, TOKEN, down_url

from bot import blocks
from flywheel.settings import load_settings

BOT_DIR = Path(__file__).resolve().parent.parent / "bot"
MANIFEST = yaml.safe_load((BOT_DIR / "slack_manifest.yaml").read_text())

# Scopes each Slack Web API method needs (https://docs.slack.dev/reference/methods).
METHOD_SCOPES = {
    "auth.test": set(),
    "apps.connections.open": set(),  # Socket Mode: the app-level token's connections:write, no bot scope
    "chat.postMessage": {"chat:write"},
    "chat.update": {"chat:write"},
    "chat.postEphemeral": {"chat:write"},
    "chat.startStream": {"chat:write"},
    "chat.appendStream": {"chat:write"},
    "chat.stopStream": {"chat:write"},
    "views.open": set(),
    # Threads can be in public or private channels, direct or group messages.
    "conversations.replies": {"channels:history", "groups:history", "im:history", "mpim:history"},
    "assistant.threads.setStatus": {"assistant:write"},
    "assistant.threads.setSuggestedPrompts": {"assistant:write"},
    "assistant.threads.setTitle": {"assistant:write"},
}
EVENT_SCOPES = {
    "app_mention": {"app_mentions:read"},
    "message.im": {"im:history"},
    "message.channels": {"channels:history"},
    "assistant_thread_started": {"assistant:write"},
    "assistant_thread_context_changed": {"assistant:write"},
}
BOLT_UTILITIES = {  # listener arguments Bolt binds to a Web API method
    "say": "chat.postMessage",
    "set_status": "assistant.threads.setStatus",
    "set_suggested_prompts": "assistant.threads.setSuggestedPrompts",
    "set_title": "assistant.threads.setTitle",
}


def _message(channel: str, channel_type: str) -> dict:
    # From a person, with no text: a listener takes it, finds no question, and does nothing.
    return {"type": "message", "user": ALICE, "text": "", "ts": "1.000001", "channel": channel,
            "channel_type": channel_type, "event_ts": "1.000001"}


THREAD = {"user_id": ALICE, "context": {"channel_id": CHANNEL}, "channel_id": DM, "thread_ts": "1.000002"}
EVENT_PROBES = {  # manifest event name -> an event of that kind
    "app_mention": {"type": "app_mention", "user": ALICE, "text": "", "ts": "1.000003", "channel": CHANNEL},
    "message.im": _message(DM, "im"),
    "message.channels": _message(CHANNEL, "channel"),
    "message.groups": _message("G0PRIVATE", "group"),
    "message.mpim": _message("G0GROUPDM", "mpim"),
    "assistant_thread_started": {"type": "assistant_thread_started", "assistant_thread": THREAD},
    "assistant_thread_context_changed": {"type": "assistant_thread_context_changed", "assistant_thread": THREAD},
    "app_home_opened": {"type": "app_home_opened", "user": ALICE, "channel": DM, "tab": "home"},
    "reaction_added": {"type": "reaction_added", "user": ALICE, "reaction": "thumbsup",
                       "item": {"type": "message", "channel": CHANNEL, "ts": "1.0"}},
    "member_joined_channel": {"type": "member_joined_channel", "user": ALICE, "channel": CHANNEL},
    "app_uninstalled": {"type": "app_uninstalled"},
}


@pytest.fixture(scope="module")
def bot(tmp_path_factory, base_model_dir):
    from storage.db import upgrade

    home = tmp_path_factory.mktemp("manifest")
    url = f"sqlite:///{home / 'flywheel.db'}"
    upgrade(url)
    with SlackStub(TOKEN) as slack:
        settings = load_settings(
            home=home, database_url=url, base_model_path=base_model_dir, vllm_url=down_url(),
            slack_bot_token=TOKEN, slack_signing_secret=SECRET, slack_api_url=slack.url, bot_mode="http",
        )
        with RunningBot(settings) as running:
            yield running


def test_subscribed_events_are_exactly_the_handled_ones(bot):
    handled = {
        name for name, event in EVENT_PROBES.items()
        if bot.send_event(event_callback(event)).status_code == 200  # Bolt answers 404 when no listener matched
    }
    assert handled == set(MANIFEST["settings"]["event_subscriptions"]["bot_events"])


def test_slash_commands_and_interactivity_are_handled(bot):
    commands = [c["command"] for c in MANIFEST["features"]["slash_commands"]]
    for command in commands:
        assert bot.send_command(slash_command(ALICE, CHANNEL, command, "help")).status_code == 200
    assert bot.send_command(slash_command(ALICE, CHANNEL, "/not-ours", "")).status_code == 404

    assert MANIFEST["settings"]["interactivity"]["is_enabled"] is True
    message = {"type": "message", "ts": "1.000004", "text": "an answer", "blocks": []}
    for action_id in (blocks.VOTE_ACTION, blocks.BETTER_ACTION, blocks.RETRY_ACTION):
        action = {"type": "button", "action_id": action_id, "block_id": "b", "value": "up:999999"
                  if action_id == blocks.VOTE_ACTION else "999999"}
        assert bot.send_interaction(block_actions(ALICE, CHANNEL, message, action)).status_code == 200, action_id
    view = blocks.better_answer_modal(999999, "an answer", CHANNEL, "1.0")
    values = {blocks.BETTER_BLOCK: {blocks.BETTER_INPUT: {"type": "plain_text_input", "value": "better"}}}
    assert bot.send_interaction(view_submission(ALICE, view, values)).status_code == 200


def web_api_methods_called() -> set[str]:
    """Every Web API method the bot's code calls, directly or through a Bolt utility argument."""
    source = "\n".join(path.read_text() for path in BOT_DIR.rglob("*.py"))
    methods = {name.replace("_", ".") for name in re.findall(r"\bclient\.(\w+)\(", source)}
    methods |= {method for arg, method in BOLT_UTILITIES.items() if re.search(rf"\b{arg}: \w+", source)}
    return methods | {"auth.test"}  # Bolt checks the token at start


def test_scopes_are_exactly_what_the_app_needs():
    methods = web_api_methods_called()
    assert {"chat.postMessage", "chat.update", "views.open", "conversations.replies"} <= methods
    unknown = methods - METHOD_SCOPES.keys()
    assert not unknown, f"add the scopes of {unknown} to METHOD_SCOPES"
    events = MANIFEST["settings"]["event_subscriptions"]["bot_events"]
    needed = set().union(*(METHOD_SCOPES[m] for m in methods), *(EVENT_SCOPES[e] for e in events))
    if MANIFEST["features"]["slash_commands"]:
        needed.add("commands")
    assert set(MANIFEST["oauth_config"]["scopes"]["bot"]) == needed
    if "chat.startStream" in methods:  # Slack streams only for apps with the Agents & AI Apps feature
        assert "assistant_view" in MANIFEST["features"]
