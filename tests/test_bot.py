"""The real Bolt app over HTTP, signed requests in Slack's payload shapes, the Web API stand-in,
answers from the real vLLM server, records in the real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
import time

import pytest
from slack_stub import (
    BOT_ID,
    BOT_USER_ID,
    TEAM_ID,
    RunningBot,
    SlackStub,
    app_mention,
    block_actions,
    direct_message,
    event_callback,
    view_submission,
)
from slack_support import (
    ALICE,
    BOB,
    CHANNEL,
    DM,
    QUESTION,
    REPLIES,
    SECRET,
    TOKEN,
    ask,
    bot_settings,
    button,
    element,
    eventually,
    posted,
    rows,
    thumb,
    vote,
    wait_for_reply,
)
from vllm_fixture import free_port

from bot import blocks
from bot.answering import RATE_LIMITED, THINKING
from bot.listeners.views import SAVED
from storage.db import session_scope
from storage.models import Alternative, Conversation, Feedback, Interaction, InteractionStatus, PairSource, PairStatus, PreferencePair


@pytest.fixture
def slack():
    with SlackStub(TOKEN) as stub:
        yield stub


@pytest.fixture
def bot(tmp_path, database_url, base_model_dir, slack, vllm_server):
    with RunningBot(bot_settings(tmp_path, database_url, base_model_dir, slack, vllm_server.url)) as running:
        yield running


def down_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there: the model server is down


@pytest.fixture
def bot_without_model(tmp_path, database_url, base_model_dir, slack):
    with RunningBot(bot_settings(tmp_path, database_url, base_model_dir, slack, down_url())) as running:
        yield running


@pytest.mark.vllm
def test_mention_gets_a_threaded_answer_streamed_with_feedback_buttons(bot, slack, caplog):
    caplog.set_level(logging.DEBUG)
    answer = ask(bot, slack)

    question = slack.messages[-2]
    assert answer["thread_ts"] == question["ts"] and answer["user"] == BOT_USER_ID
    assert "Paris" in answer["text"]
    assert [b["type"] for b in answer["blocks"]] == ["context_actions", "actions", "context"]  # under the text
    assert element(answer, blocks.VOTE_ACTION)["type"] == "feedback_buttons"
    assert element(answer, blocks.BETTER_ACTION)["type"] == "button"
    status = posted(slack, "assistant.threads.setStatus")
    assert [(s["channel_id"], s["thread_ts"], s["status"]) for s in status] == [(CHANNEL, question["ts"], THINKING)]

    # Streamed as the model wrote it, for the person who asked: one message, growing, never edited.
    [start], appends, [stop] = (posted(slack, f"chat.{m}Stream") for m in ("start", "append", "stop"))
    assert (start["channel"], start["thread_ts"], start["recipient_user_id"], start["recipient_team_id"]) == (
        CHANNEL, question["ts"], ALICE, TEAM_ID)
    assert len(appends) > 1 and {a["ts"] for a in appends} == {stop["ts"]} == {answer["ts"]}
    pieces = [start["markdown_text"], *(a["markdown_text"] for a in appends), stop.get("markdown_text", "")]
    assert "".join(pieces) == answer["text"]
    assert posted(slack) == [] and posted(slack, "chat.update") == []

    [interaction] = eventually(lambda: [i for i in rows(bot, Interaction) if i.message_ts])
    assert interaction.status is InteractionStatus.ok and interaction.answer == answer["text"]
    assert interaction.prompt_messages == [{"role": "user", "content": QUESTION}]
    assert interaction.message_ts == answer["ts"] and interaction.served_model == "base"
    assert answer["metadata"] == blocks.answer_metadata(interaction.id)
    [conversation] = rows(bot, Conversation)
    assert (conversation.channel_id, conversation.thread_ts, interaction.user_id) == (CHANNEL, question["ts"], ALICE)
    assert TOKEN not in caplog.text and SECRET not in caplog.text  # never logged, even at DEBUG


@pytest.mark.vllm
def test_without_slack_streaming_the_answer_is_posted_then_edited_as_it_grows(
    tmp_path, sqlite_url, base_model_dir, vllm_server
):
    with SlackStub(TOKEN, streaming=False) as slack, RunningBot(
        bot_settings(tmp_path, sqlite_url, base_model_dir, slack, vllm_server.url)
    ) as bot:
        question = slack.user_message(CHANNEL, ALICE, f"<@{BOT_USER_ID}> {QUESTION}")
        bot.send_event(event_callback(app_mention(question, CHANNEL)))
        [interaction] = eventually(lambda: [i for i in rows(bot, Interaction) if i.message_ts], timeout=120)
    assert len(posted(slack, "chat.startStream")) == 1 and posted(slack, "chat.appendStream") == []  # refused
    [first] = posted(slack)
    updates = posted(slack, "chat.update")
    assert len(updates) > 1 and {u["ts"] for u in updates} == {interaction.message_ts}
    answer = slack.messages[-1]
    assert answer["thread_ts"] == question["ts"] and answer["text"] == interaction.answer
    assert first["text"] != answer["text"] and answer["text"].startswith(first["text"])
    assert [b["type"] for b in answer["blocks"]] == ["markdown", "context_actions", "actions", "context"]
    assert answer["metadata"] == blocks.answer_metadata(interaction.id)


@pytest.mark.vllm
def test_follow_up_in_a_direct_message_thread_keeps_the_thread_as_context(bot, slack):
    first = slack.user_message(DM, ALICE, QUESTION)
    bot.send_event(event_callback(direct_message(first, DM)))
    first_answer = wait_for_reply(slack, 0)
    assert first_answer["thread_ts"] == first["ts"]

    follow_up = slack.user_message(DM, ALICE, "And of Italy?", thread_ts=first["ts"])
    bot.send_event(event_callback(direct_message(follow_up, DM)))
    wait_for_reply(slack, 1)

    assert posted(slack, "conversations.replies")[0]["ts"] == first["ts"]
    second = rows(bot, Interaction)[1]
    assert second.prompt_messages == [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": first_answer["text"]},
        {"role": "user", "content": "And of Italy?"},
    ]
    assert second.conversation_id == rows(bot, Interaction)[0].conversation_id
    assert slack.messages[-1]["thread_ts"] == first["ts"]


@pytest.mark.vllm
def test_a_vote_is_counted_once_per_user_and_can_change(bot, slack):
    answer = ask(bot, slack)
    for which in ("up", "down"):
        response = bot.send_interaction(block_actions(BOB, CHANNEL, answer, thumb(answer, which)))
        assert response.status_code == 200
    slack.wait_for("chat.postEphemeral", 2)

    [feedback] = rows(bot, Feedback)
    assert (feedback.user_id, feedback.vote.value) == (BOB, "down")
    confirmations = posted(slack, "chat.postEphemeral")
    assert sorted(c["text"] for c in confirmations) == sorted(map(blocks.vote_confirmation, ("up", "down")))
    assert all(c["user"] == BOB and c["thread_ts"] == answer["thread_ts"] for c in confirmations)


@pytest.mark.vllm
def test_better_answer_opens_a_prefilled_modal_and_makes_a_pending_pair(bot, slack):
    answer = ask(bot, slack)
    bot.send_interaction(block_actions(BOB, CHANNEL, answer, button(answer, blocks.BETTER_ACTION)))
    [opened] = slack.wait_for("views.open")
    view = opened.params["view"]
    field = view["blocks"][1]["element"]
    assert field["initial_value"] == answer["text"] and opened.params["trigger_id"]

    def submit(text):
        values = {blocks.BETTER_BLOCK: {blocks.BETTER_INPUT: {"type": "plain_text_input", "value": text}}}
        return bot.send_interaction(view_submission(BOB, view, values))

    for refused in (answer["text"], "   "):  # unchanged, empty: refused inside the modal
        response = submit(refused)
        assert response.status_code == 200 and response.json()["response_action"] == "errors"
        assert list(response.json()["errors"]) == [blocks.BETTER_BLOCK]
    assert rows(bot, Alternative) == [] and rows(bot, PreferencePair) == []

    better = "Paris is the capital of France, and its largest city."
    response = submit(better)
    assert response.status_code == 200 and response.text == ""  # closes the modal
    [alternative] = rows(bot, Alternative)
    [pair] = rows(bot, PreferencePair)
    assert (alternative.text, alternative.user_id) == (better, BOB)
    assert (pair.chosen, pair.rejected, pair.status, pair.source) == (
        better, answer["text"], PairStatus.pending, PairSource.alternative)
    assert pair.prompt == [{"role": "user", "content": QUESTION}] and pair.channel_id == CHANNEL
    assert slack.wait_for("chat.postEphemeral")[0].params["text"] == SAVED


@pytest.mark.vllm
def test_opposite_votes_on_two_answers_to_one_prompt_make_a_pair(bot, slack):
    first = ask(bot, slack)
    second = ask(bot, slack)  # the same prompt, asked again in a new thread
    with session_scope(bot.services.engine) as session:  # vary the stored answer: greedy decoding repeats itself
        session.get(Interaction, 2).answer = "Lyon."
    bot.send_interaction(block_actions(ALICE, CHANNEL, first, thumb(first, "up")))
    bot.send_interaction(block_actions(ALICE, CHANNEL, second, thumb(second, "down")))
    slack.wait_for("chat.postEphemeral", 2)
    [pair] = rows(bot, PreferencePair)
    assert (pair.chosen, pair.rejected, pair.source) == (first["text"], "Lyon.", PairSource.vote_contrast)


@pytest.mark.vllm
def test_a_redelivered_event_is_answered_once(bot, slack, tmp_path, database_url, base_model_dir, vllm_server):
    message = slack.user_message(CHANNEL, ALICE, f"<@{BOT_USER_ID}> {QUESTION}")
    payload = event_callback(app_mention(message, CHANNEL))
    retry = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    assert bot.send_event(payload).status_code == 200
    assert bot.send_event(payload, headers=retry).status_code == 200
    wait_for_reply(slack, 0)
    # A second bot process (nothing in memory shared) gets the third delivery: the database refuses it.
    settings = bot_settings(tmp_path / "b", database_url, base_model_dir, slack, vllm_server.url)
    with RunningBot(settings) as other:
        assert other.send_event(payload, headers={**retry, "X-Slack-Retry-Num": "2"}).status_code == 200
        time.sleep(1.5)
    assert len(posted(slack, "chat.startStream")) == 1 and len(slack.calls_to(REPLIES)) == 1
    assert len(rows(bot, Interaction)) == 1


@pytest.mark.vllm
def test_model_down_apologises_stores_the_question_and_try_again_answers(
    bot_without_model, slack, tmp_path, database_url, base_model_dir, vllm_server
):
    ask(bot_without_model, slack)
    apology = slack.messages[-1]
    assert "try again" in apology["text"] and apology["thread_ts"] == slack.messages[-2]["ts"]
    [failed] = rows(bot_without_model, Interaction)
    assert failed.status is InteractionStatus.failed and "ModelUnavailable" in failed.error
    assert failed.prompt_messages == [{"role": "user", "content": QUESTION}]

    # Still down: the button keeps the apology and the question.
    retry = block_actions(ALICE, CHANNEL, apology, button(apology, blocks.RETRY_ACTION))
    bot_without_model.send_interaction(retry)
    slack.wait_for("chat.update")
    assert rows(bot_without_model, Interaction)[0].status is InteractionStatus.failed

    # The model is back: the same button answers in place of the apology (streamed by editing it), on the
    # same record.
    settings = bot_settings(tmp_path / "up", database_url, base_model_dir, slack, vllm_server.url)
    with RunningBot(settings) as bot:
        bot.send_interaction(retry)
        [answered] = eventually(lambda: [i for i in rows(bot, Interaction) if i.message_ts], timeout=120)
    assert answered.status is InteractionStatus.ok and "Paris" in answered.answer
    answer = slack.messages[-1]
    assert answer["ts"] == apology["ts"] == answered.message_ts and answer["text"] == answered.answer
    assert len(posted(slack, "chat.update")) > 2 and element(answer, blocks.VOTE_ACTION)
    assert len(posted(slack)) == 1 and posted(slack, "chat.startStream") == []


def test_requests_without_a_valid_signature_are_refused_and_change_nothing(bot_without_model, slack):
    bot = bot_without_model
    message = slack.user_message(CHANNEL, ALICE, f"<@{BOT_USER_ID}> {QUESTION}")
    payload = event_callback(app_mention(message, CHANNEL))
    forged = {"X-Slack-Signature": "v0=" + "0" * 64}
    six_minutes_ago = int(time.time()) - 6 * 60  # correctly signed, but too old: a replay
    for response in (
        bot.send_event(payload, headers=forged),
        bot.send_event(payload, timestamp=six_minutes_ago),
        bot.post('{"type": "event_callback"}', "application/json", headers={"X-Slack-Signature": ""}),
    ):
        assert response.status_code == 401
    time.sleep(0.5)
    assert rows(bot, Interaction) == [] and posted(slack) == []


def test_own_and_other_bots_messages_are_ignored(bot_without_model, slack):
    bot = bot_without_model
    own = {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "text": "an answer", "ts": slack.next_ts()}
    other_bot = {"type": "message", "subtype": "bot_message", "bot_id": "B0OTHER", "text": "beep", "ts": slack.next_ts()}
    edited = {"type": "message", "subtype": "message_changed", "hidden": True, "ts": slack.next_ts(),
              "message": {"user": ALICE, "text": "edited", "ts": "1.0"}}
    for event in (own, other_bot, edited):
        assert bot.send_event(event_callback(direct_message(event, DM))).status_code == 200
    # A person's message after them is answered (here: the apology, as the model is down) and is the only reply.
    person = slack.user_message(DM, ALICE, QUESTION)
    bot.send_event(event_callback(direct_message(person, DM)))
    slack.wait_for("chat.postMessage")
    time.sleep(0.5)
    assert [p["thread_ts"] for p in posted(slack)] == [person["ts"]]
    assert [i.user_id for i in rows(bot, Interaction)] == [ALICE]


def test_rate_limit_answers_with_a_friendly_message(tmp_path, database_url, base_model_dir, slack):
    settings = bot_settings(tmp_path, database_url, base_model_dir, slack, down_url(), rate_limit_per_minute=1)
    with RunningBot(settings) as bot:
        ask(bot, slack)
        message = slack.user_message(CHANNEL, ALICE, f"<@{BOT_USER_ID}> and again?")
        bot.send_event(event_callback(app_mention(message, CHANNEL)))
        [limited] = slack.wait_for("chat.postEphemeral")
        assert (limited.params["text"], limited.params["user"]) == (RATE_LIMITED, ALICE)
        assert len(rows(bot, Interaction)) == 1


def test_pii_is_redacted_before_it_is_stored(tmp_path, sqlite_url, base_model_dir, slack):
    settings = bot_settings(tmp_path, sqlite_url, base_model_dir, slack, down_url(), pii_redaction=True)
    with RunningBot(settings) as bot:
        ask(bot, slack, "Mail jane.doe@example.com or call +1 415 555 0100, key sk-abcdefghijklmnop1234")
        [interaction] = rows(bot, Interaction)
    assert interaction.prompt_messages[0]["content"] == "Mail [EMAIL] or call [PHONE], key [TOKEN]"


def test_slash_command_status_and_help(bot_without_model, slack):
    from slack_stub import slash_command

    bot = bot_without_model
    ask(bot, slack)  # one failed interaction; no pairs, no runs, no versions
    status = bot.send_command(slash_command(ALICE, CHANNEL, "/flywheel", "status"))
    assert status.status_code == 200
    text = status.text  # Bolt answers a text-only ack as plain text, which Slack shows only to the asker
    assert "base model" in text and "review:* 0" in text and "none yet" in text
    assert "/flywheel status" in bot.send_command(slash_command(ALICE, CHANNEL, "/flywheel", "help")).text
    assert "don't know `dance`" in bot.send_command(slash_command(ALICE, CHANNEL, "/flywheel", "dance")).text


def test_opening_an_assistant_thread_greets_and_suggests_prompts(bot_without_model, slack):
    thread = {"user_id": ALICE, "context": {"channel_id": CHANNEL, "team_id": "T0FLYWHEEL"},
              "channel_id": DM, "thread_ts": slack.next_ts()}
    event = {"type": "assistant_thread_started", "assistant_thread": thread, "event_ts": slack.next_ts()}
    assert bot_without_model.send_event(event_callback(event)).status_code == 200
    [prompts] = slack.wait_for("assistant.threads.setSuggestedPrompts")
    assert prompts.params["channel_id"] == DM and prompts.params["thread_ts"] == thread["thread_ts"]
    assert len(prompts.params["prompts"]) == 3
    [greeting] = slack.wait_for("chat.postMessage")
    assert greeting.params["thread_ts"] == thread["thread_ts"]


@pytest.mark.vllm
def test_slack_answering_429_and_5xx_delays_the_answer_but_loses_nothing(bot, slack):
    slack.fail("chat.startStream", 429)  # rate limited: wait Retry-After (1 s), then again
    slack.fail("chat.stopStream", 503, 500)  # broken for a moment: retried with backoff
    slack.fail("chat.postEphemeral", 429)
    answer = ask(bot, slack)
    assert "Paris" in answer["text"] and element(answer, blocks.VOTE_ACTION)
    assert [c.method for c in slack.refused] == ["chat.startStream", "chat.stopStream", "chat.stopStream"]
    assert len(slack.answers_by_thread()[answer["thread_ts"]]) == 1  # one answer, not one per retry
    [interaction] = eventually(lambda: [i for i in rows(bot, Interaction) if i.message_ts])
    assert interaction.message_ts == answer["ts"] and interaction.answer == answer["text"]
    vote(bot, BOB, answer, "up")
    [confirmation] = slack.wait_for("chat.postEphemeral")
    assert confirmation.params["text"] == blocks.vote_confirmation("up") and len(slack.refused) == 4
